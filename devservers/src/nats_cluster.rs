//! A 3-node nats-server cluster from `nats-config/cluster-node-*.conf` on loopback, every link behind a proxy, so a test can kill, restart, cut off and heal any node.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::time::Instant;

use crate::nats::{NatsServer, NatsServerOptions, RouteOptions};
use crate::nats_monitoring::{
    consumer_leader_name, get_json, http_get, leaders, meta_leader_name, routed_server_names,
    stream_leader_name, stream_message_count,
};
use crate::tcp_proxy::TcpProxy;

pub const CLUSTER_SIZE: usize = 3;

/// How often the cluster's waits re-check their condition.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Keys of the checked-in node configs that the tests must own: nats-server refuses `store_dir` from the
/// file and `-sd` together, and the file's `http` binds monitoring to 0.0.0.0 on a fixed port, which
/// no flag can move back to loopback (`-m` sets only the port). `include` brings in `users.conf`: the
/// cluster tests run without NATS users (least privilege is tested on one node, in `nats_permissions`).
const KEYS_THE_TESTS_OWN: &[&str] = &["store_dir", "http", "include"];

/// PEM files for TLS on the routes: each node presents `cert_file` and verifies its peers against `ca_file`.
#[derive(Debug, Clone)]
pub struct RouteTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: PathBuf,
}

/// Three nats-server nodes of the cluster `natter`, as `nats-config/` defines them, on free loopback ports.
///
/// Every connection into a node goes through a [`TcpProxy`] that [`NatsCluster::cut`] can cut:
/// * clients: one proxy in front of each node's client port; [`NatsCluster::client_urls`] lists
///   the proxies, and the nodes run with `--no_advertise`, so clients never learn a real port;
/// * routes: one proxy per ordered pair of nodes (node `a` solicits node `b` through `a→b`), so a
///   cut node loses its routes in both directions while the other two keep theirs. Route pooling
///   (several connections per pair) goes through the same proxy. Each node advertises a cluster
///   address that always refuses, so gossip (implicit routes) cannot open a link around a proxy;
///   the explicit routes already name every pair.
///
/// Monitoring (`/healthz`, `/routez`, `/jsz`) is reached directly: it is the test's view, not a link.
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
    names: Vec<String>,
    killed: [bool; CLUSTER_SIZE],
    cut_off: [bool; CLUSTER_SIZE],
    /// Where clients reach each node: its proxy, or the node itself in a direct cluster.
    client_addresses: Vec<SocketAddr>,
    /// Empty in a direct cluster (see [`NatsCluster::start_direct`]).
    client_proxies: Vec<TcpProxy>,
    /// `route_proxies[from][to]`; `None` on the diagonal.
    route_proxies: Vec<Vec<Option<TcpProxy>>>,
    _advertised_sink: TcpProxy,
}

impl NatsCluster {
    /// Starts the three nodes with their stores, logs and config copies under `dir`, and waits until they are healthy.
    pub async fn start(dir: &Path) -> anyhow::Result<NatsCluster> {
        Self::start_with_route_tls(dir, None).await
    }

    /// As [`NatsCluster::start`], with TLS (and certificate verification) on the routes between the
    /// nodes: the `tls` block of `nats-config/README.md`, added inside each node's `cluster` block.
    pub async fn start_with_route_tls(dir: &Path, route_tls: Option<&RouteTls>) -> anyhow::Result<NatsCluster> {
        Self::start_nodes(dir, route_tls, false).await
    }

    /// As [`NatsCluster::start`], but clients and routes reach the nodes directly, with no proxy in
    /// between: for benchmarks, where every byte of replication copied through this process would
    /// cost CPU and latency that a real cluster does not pay. Such a cluster cannot be cut.
    pub async fn start_direct(dir: &Path) -> anyhow::Result<NatsCluster> {
        Self::start_nodes(dir, None, true).await
    }

    async fn start_nodes(dir: &Path, route_tls: Option<&RouteTls>, direct: bool) -> anyhow::Result<NatsCluster> {
        // A proxy that is cut from the start accepts and closes at once: the advertised address that
        // makes an implicit route fail fast instead of bypassing the per-link proxies.
        let advertised_sink = TcpProxy::start(None).await?;
        advertised_sink.cut();
        let mut client_proxies = Vec::new();
        let mut route_proxies = Vec::new();
        let direct_route_ports = match direct {
            true => free_loopback_ports(CLUSTER_SIZE)?,
            false => Vec::new(),
        };
        for from in (0..CLUSTER_SIZE).filter(|_| !direct) {
            client_proxies.push(TcpProxy::start(None).await?);
            let mut row = Vec::new();
            for to in 0..CLUSTER_SIZE {
                row.push(match from == to {
                    true => None,
                    false => Some(TcpProxy::start(None).await?),
                });
            }
            route_proxies.push(row);
        }

        let mut nodes = Vec::new();
        let mut names = Vec::new();
        let mut client_addresses = Vec::new();
        for node in 0..CLUSTER_SIZE {
            let node_dir = dir.join(format!("node-{}", node + 1));
            std::fs::create_dir_all(&node_dir)
                .with_context(|| format!("failed to create {}", node_dir.display()))?;
            let config_file = write_test_config(node, &node_dir, route_tls)?;
            let routes = match direct {
                true => (0..CLUSTER_SIZE)
                    .filter(|&other| other != node)
                    .map(|other| format!("nats-route://127.0.0.1:{}", direct_route_ports[other]))
                    .collect(),
                false => route_proxies[node]
                    .iter()
                    .flatten()
                    .map(|proxy| format!("nats-route://{}", proxy.address()))
                    .collect(),
            };
            let options = NatsServerOptions {
                config_file: Some(config_file),
                monitoring: true,
                routes: Some(RouteOptions {
                    routes,
                    // Direct nodes gossip their real route listeners, which the explicit routes name anyway.
                    cluster_advertise: (!direct).then(|| advertised_sink.address().to_string()),
                    no_advertise_to_clients: true,
                    listen_port: direct_route_ports.get(node).copied(),
                }),
                ..NatsServerOptions::default()
            };
            let server = NatsServer::start_with_options(&node_dir.join("store"), options)
                .await
                .with_context(|| format!("failed to start cluster node {}", node + 1))?;
            let cluster_port = server
                .cluster_port()
                .context("a cluster node reported no route port")?;
            match direct {
                true => client_addresses.push(loopback(server.port())),
                false => {
                    client_proxies[node].set_target(loopback(server.port()));
                    client_addresses.push(client_proxies[node].address());
                }
            }
            for row in &route_proxies {
                if let Some(proxy) = &row[node] {
                    proxy.set_target(loopback(cluster_port));
                }
            }
            let monitoring_port = server
                .monitoring_port()
                .context("a cluster node reported no monitoring port")?;
            let varz = get_json(monitoring_port, "/varz").await?;
            let name = varz
                .get("server_name")
                .and_then(serde_json::Value::as_str)
                .context("/varz has no server_name")?;
            names.push(name.to_owned());
            nodes.push(server);
        }
        let cluster = NatsCluster {
            nodes,
            names,
            killed: [false; CLUSTER_SIZE],
            cut_off: [false; CLUSTER_SIZE],
            client_addresses,
            client_proxies,
            route_proxies,
            _advertised_sink: advertised_sink,
        };
        cluster.wait_healthy(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    /// `nats://127.0.0.1:<proxy>` for every node, comma-separated: what `NATTER_NATS_URL` takes.
    pub fn client_urls(&self) -> String {
        (0..CLUSTER_SIZE)
            .map(|node| self.node_client_url(node))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The URL that reaches only `node` (through its client proxy).
    pub fn node_client_url(&self, node: usize) -> String {
        format!("nats://{}", self.client_addresses[node])
    }

    /// The server name (`n1`..`n3`, from the config files) of `node` (0-based).
    pub fn node_name(&self, node: usize) -> &str {
        &self.names[node]
    }

    /// The node (0-based) with this server name.
    pub fn node_named(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|known| known == name)
    }

    /// The server process of `node`, for its pid, log and store.
    pub fn node(&self, node: usize) -> &NatsServer {
        &self.nodes[node]
    }

    pub fn monitoring_port(&self, node: usize) -> u16 {
        self.nodes[node]
            .monitoring_port()
            .expect("cluster nodes serve monitoring")
    }

    /// SIGKILL `node`, as a crash would; waits until the process is gone.
    pub async fn kill(&mut self, node: usize) {
        self.nodes[node].kill().await;
        self.killed[node] = true;
    }

    /// Starts `node` again on its ports and store (it rejoins through its proxies; call [`NatsCluster::wait_healthy`]).
    pub async fn restart(&mut self, node: usize) -> anyhow::Result<()> {
        self.nodes[node].restart().await?;
        self.killed[node] = false;
        Ok(())
    }

    /// Partitions `node` off: its routes to and from the others and its clients' connections are dropped,
    /// and new ones refused until [`NatsCluster::heal`]. The process keeps running.
    pub fn cut(&mut self, node: usize) {
        assert!(!self.client_proxies.is_empty(), "a cluster started direct has no links to cut");
        self.cut_off[node] = true;
        self.apply_cuts();
    }

    pub fn heal(&mut self, node: usize) {
        self.cut_off[node] = false;
        self.apply_cuts();
    }

    /// A link is cut while either end is cut off, so healing one node leaves another's cut in place.
    fn apply_cuts(&self) {
        for (from, row) in self.route_proxies.iter().enumerate() {
            for (to, proxy) in row.iter().enumerate() {
                if let Some(proxy) = proxy {
                    set_cut(proxy, self.cut_off[from] || self.cut_off[to]);
                }
            }
        }
        for (node, proxy) in self.client_proxies.iter().enumerate() {
            set_cut(proxy, self.cut_off[node]);
        }
    }

    /// Nodes neither killed nor cut off.
    fn reachable_nodes(&self) -> Vec<usize> {
        (0..CLUSTER_SIZE)
            .filter(|&node| !self.killed[node] && !self.cut_off[node])
            .collect()
    }

    /// Waits until every reachable node answers `/healthz` (JetStream current), has a route to every
    /// other reachable node, and all of them agree on a reachable meta leader.
    pub async fn wait_healthy(&self, deadline: Duration) -> anyhow::Result<()> {
        let give_up_at = Instant::now() + deadline;
        loop {
            let problem = match self.health_problem().await {
                Ok(None) => return Ok(()),
                Ok(Some(problem)) => problem,
                Err(error) => format!("{error:#}"),
            };
            if Instant::now() >= give_up_at {
                bail!("the NATS cluster is not healthy after {deadline:?}: {problem}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// What is still wrong, or `None` when the reachable nodes are healthy.
    async fn health_problem(&self) -> anyhow::Result<Option<String>> {
        let reachable = self.reachable_nodes();
        for &node in &reachable {
            let (status, body) = http_get(self.monitoring_port(node), "/healthz").await?;
            if status != 200 {
                return Ok(Some(format!(
                    "{} /healthz: {status} {body}",
                    self.names[node]
                )));
            }
            let routed = self.routed_nodes(node).await?;
            if let Some(missing) = reachable
                .iter()
                .find(|&&other| other != node && !routed.contains(&other))
            {
                return Ok(Some(format!(
                    "{} has no route to {}",
                    self.names[node], self.names[*missing]
                )));
            }
        }
        match self.meta_leader().await? {
            Some(_) => Ok(None),
            None => Ok(Some(
                "the reachable nodes do not agree on a meta leader".to_owned(),
            )),
        }
    }

    /// The nodes `node` has routes to, from its `/routez`.
    pub async fn routed_nodes(&self, node: usize) -> anyhow::Result<Vec<usize>> {
        let routez = get_json(self.monitoring_port(node), "/routez").await?;
        Ok(routed_server_names(&routez)
            .iter()
            .filter_map(|name| self.node_named(name))
            .collect())
    }

    /// The JetStream meta leader, if every reachable node names the same reachable one.
    pub async fn meta_leader(&self) -> anyhow::Result<Option<usize>> {
        self.agreed_leader("/jsz", meta_leader_name).await
    }

    /// The leader of `stream`, if every reachable node names the same reachable one.
    pub async fn stream_leader(&self, stream: &str) -> anyhow::Result<Option<usize>> {
        self.agreed_leader("/jsz?streams=true", |jsz| stream_leader_name(jsz, stream))
            .await
    }

    /// The leader of the durable `consumer` of `stream`, if every reachable node names the same reachable one.
    pub async fn consumer_leader(
        &self,
        stream: &str,
        consumer: &str,
    ) -> anyhow::Result<Option<usize>> {
        self.agreed_leader("/jsz?consumers=true", |jsz| {
            consumer_leader_name(jsz, stream, consumer)
        })
        .await
    }

    /// Every stream's and consumer's (durable or not) leader as `node` sees it: (stream, consumer
    /// or `None` for the stream, leader's server name or `None` during an election). Shows how load
    /// is placed; a node lists only what it holds a replica of.
    pub async fn leaders_seen_by(
        &self,
        node: usize,
    ) -> anyhow::Result<Vec<(String, Option<String>, Option<String>)>> {
        let jsz = get_json(self.monitoring_port(node), "/jsz?consumers=true").await?;
        Ok(leaders(&jsz))
    }

    /// How many messages `node`'s own replica of `stream` holds (it may lag the leader).
    pub async fn stream_messages_on(
        &self,
        node: usize,
        stream: &str,
    ) -> anyhow::Result<Option<u64>> {
        let jsz = get_json(self.monitoring_port(node), "/jsz?streams=true").await?;
        Ok(stream_message_count(&jsz, stream))
    }

    async fn agreed_leader(
        &self,
        path_and_query: &str,
        leader_of: impl Fn(&serde_json::Value) -> Option<String>,
    ) -> anyhow::Result<Option<usize>> {
        let reachable = self.reachable_nodes();
        let mut agreed = None;
        for &node in &reachable {
            let jsz = get_json(self.monitoring_port(node), path_and_query).await?;
            let Some(leader) = leader_of(&jsz).and_then(|name| self.node_named(&name)) else {
                return Ok(None);
            };
            if agreed.is_some_and(|agreed| agreed != leader) || !reachable.contains(&leader) {
                return Ok(None);
            }
            agreed = Some(leader);
        }
        Ok(agreed)
    }
}

fn set_cut(proxy: &TcpProxy, cut: bool) {
    match cut {
        true => proxy.cut(),
        false => proxy.heal(),
    }
}

/// `count` distinct free ports on 127.0.0.1; all are held until all are known, so none repeats.
fn free_loopback_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("failed to find free route ports")?;
    listeners
        .iter()
        .map(|listener| Ok(listener.local_addr()?.port()))
        .collect()
}

/// Connects to `urls`: one server, or a cluster's nodes comma-separated as [`NatsCluster::client_urls`]
/// (and `NATTER_NATS_URL`) list them, which `async_nats::connect` does not split itself. The client
/// picks among them at random and reconnects to another when one goes away.
pub async fn connect_nats(urls: &str) -> anyhow::Result<async_nats::Client> {
    let addresses = urls
        .split(',')
        .map(|url| url.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("not a NATS server list: {urls:?}"))?;
    async_nats::connect(addresses).await.with_context(|| format!("failed to connect to NATS at {urls}"))
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `nats-config/` at the workspace root.
fn checked_in_config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("nats-config")
}

/// Copies `cluster-node-<n>.conf` into `node_dir` without the keys the tests set by flag; returns the copy.
fn write_test_config(node: usize, node_dir: &Path, route_tls: Option<&RouteTls>) -> anyhow::Result<PathBuf> {
    let source = checked_in_config_dir().join(format!("cluster-node-{}.conf", node + 1));
    let text = std::fs::read_to_string(&source)
        .with_context(|| format!("failed to read {}", source.display()))?;
    let copy = node_dir.join(format!("cluster-node-{}.conf", node + 1));
    let header = format!(
        "# A copy of {} for tests; see nats-config/README.md.\n",
        source.display()
    );
    let mut text = without_keys(&text, KEYS_THE_TESTS_OWN);
    if let Some(tls) = route_tls {
        let block = format!(
            "cluster {{\n  tls {{\n    cert_file: \"{}\"\n    key_file: \"{}\"\n    ca_file: \"{}\"\n    verify: true\n  }}\n",
            tls.cert_file.display(),
            tls.key_file.display(),
            tls.ca_file.display()
        );
        anyhow::ensure!(text.contains("\ncluster {\n"), "{} has no `cluster {{` block for the route TLS", source.display());
        text = text.replacen("\ncluster {\n", &format!("\n{block}"), 1);
    }
    std::fs::write(&copy, header + &text)
        .with_context(|| format!("failed to write {}", copy.display()))?;
    Ok(copy)
}

/// `config` with every single-line `key: value` / `key = value` / `key value` of `keys` commented out.
fn without_keys(config: &str, keys: &[&str]) -> String {
    config
        .lines()
        .map(|line| {
            let key = line
                .trim_start()
                .split(|character: char| {
                    character == ':' || character == '=' || character.is_whitespace()
                })
                .next()
                .unwrap_or_default();
            match keys.contains(&key) {
                true => format!("# (left to the test) {line}\n"),
                false => format!("{line}\n"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::without_keys;

    fn check(config: &str, expected: &str) {
        assert_eq!(
            without_keys(config, &["store_dir", "http"]),
            expected,
            "input: {config:?}"
        );
    }

    #[test]
    fn drops_only_the_keys_the_tests_own() {
        check(
            "http: 0.0.0.0:8222\nhttps: 1\njetstream {\n  store_dir: \"/data/nats\"\n}\n",
            "# (left to the test) http: 0.0.0.0:8222\nhttps: 1\njetstream {\n# (left to the test)   store_dir: \"/data/nats\"\n}\n",
        );
        check(
            "http_port = 8222\nhttp = 8222\n",
            "http_port = 8222\n# (left to the test) http = 8222\n",
        );
    }
}
