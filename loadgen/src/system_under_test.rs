//! The system a run measures: nats-server, redis-server and the release `natter` roles as separate processes, tokens, and the groups.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use devservers::{NatsCluster, NatsServer, RedisServer};
use futures::StreamExt;
use tokio::process::Child;

use crate::plan::Population;

/// Generous: a release gateway is up in well under a second, but the box is shared.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Group creations (and member additions) in flight at once during setup.
const SETUP_CONCURRENCY: usize = 16;
/// The most members a group may name at creation: the store refuses more than 1,000
/// (`store/src/conversations.rs`, MAX_INITIAL_MEMBERS), so one less leaves room for the owner.
pub const MAX_MEMBERS_AT_CREATION: usize = 999;

/// Where the load goes, whoever started it: gateway addresses, NATS, the token secret, and pids to sample.
#[derive(Debug, Clone)]
pub struct Target {
    pub gateways: Vec<SocketAddr>,
    pub nats_url: String,
    pub jwt_secret: String,
    /// (name, pid) of every server process whose CPU and RSS the report shows.
    pub processes: Vec<(String, u32)>,
}

impl Target {
    /// A token for `user`, HS256 with the shared secret, exactly as the gateway checks it.
    pub fn token(&self, user: &str) -> String {
        let claims = schemas::TokenClaims {
            sub: user.to_owned(),
            exp: (crate::clock::unix_nanos_now() / 1_000_000_000) + 24 * 3600,
            iss: None,
            aud: None,
            role: None,
            analyst_conversations: None,
        };
        let key = jsonwebtoken::EncodingKey::from_secret(self.jwt_secret.as_bytes());
        jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), &claims, &key).expect("HS256 signing cannot fail")
    }

    pub fn http_url(&self, gateway: usize) -> String {
        format!("http://{}", self.gateways[gateway % self.gateways.len()])
    }

    pub fn ws_url(&self, gateway: usize, user: &str, device: &str, resume: bool) -> String {
        let resume = if resume { "&resume=1" } else { "" };
        format!("ws://{}/v1/ws?token={}&device={device}{resume}", self.gateways[gateway % self.gateways.len()], self.token(user))
    }
}

/// The NATS a run's roles talk to: one server, or the 3-node cluster of `nats-config/`.
enum Nats {
    Single(NatsServer),
    Cluster(NatsCluster),
}

/// Natter started by the load generator; everything is stopped when this is dropped.
pub struct SystemUnderTest {
    pub target: Target,
    roles: Vec<Child>,
    _redis: RedisServer,
    nats: Nats,
    _store: tempfile::TempDir,
}

impl SystemUnderTest {
    pub async fn start(natter_binary: &Path, gateways: usize, fanouts: usize) -> anyhow::Result<SystemUnderTest> {
        SystemUnderTest::start_with_environment(natter_binary, gateways, fanouts, &[]).await
    }

    /// As `start`, with `extra_environment` (`KEY=VALUE`) set on every natter role after the loadgen's own
    /// settings: configuration a run needs (a limit raised) or a diagnosis (an allocator setting).
    pub async fn start_with_environment(natter_binary: &Path, gateways: usize, fanouts: usize, extra_environment: &[String]) -> anyhow::Result<SystemUnderTest> {
        let store = new_store_dir()?;
        let nats = NatsServer::start(&store.path().join("nats")).await?;
        let processes = vec![("nats-server".to_owned(), nats.pid())];
        SystemUnderTest::start_roles(natter_binary, store, Nats::Single(nats), processes, gateways, fanouts, extra_environment).await
    }

    /// As `start_with_environment`, on a fresh 3-node cluster (its own store dirs) whose links go
    /// straight between the nodes; `extra_environment` is where a run asks for replicas and shards.
    pub async fn start_on_cluster(natter_binary: &Path, gateways: usize, fanouts: usize, extra_environment: &[String]) -> anyhow::Result<SystemUnderTest> {
        let store = new_store_dir()?;
        let cluster = NatsCluster::start_direct(&store.path().join("nats-cluster")).await?;
        let processes = (0..devservers::CLUSTER_SIZE).map(|node| (format!("nats-server {}", cluster.node_name(node)), cluster.node(node).pid())).collect();
        SystemUnderTest::start_roles(natter_binary, store, Nats::Cluster(cluster), processes, gateways, fanouts, extra_environment).await
    }

    /// The cluster the roles run on, when they run on one.
    pub fn cluster(&self) -> Option<&NatsCluster> {
        match &self.nats {
            Nats::Single(_) => None,
            Nats::Cluster(cluster) => Some(cluster),
        }
    }

    async fn start_roles(
        natter_binary: &Path,
        store: tempfile::TempDir,
        nats: Nats,
        mut processes: Vec<(String, u32)>,
        gateways: usize,
        fanouts: usize,
        extra_environment: &[String],
    ) -> anyhow::Result<SystemUnderTest> {
        let extra_environment: Vec<(String, String)> = extra_environment
            .iter()
            .map(|pair| pair.split_once('=').map(|(key, value)| (key.to_owned(), value.to_owned())).with_context(|| format!("--role-env {pair:?} is not KEY=VALUE")))
            .collect::<anyhow::Result<_>>()?;
        anyhow::ensure!(natter_binary.is_file(), "no natter binary at {} (build it: cargo build --release -p natter)", natter_binary.display());
        let nats_url = match &nats {
            Nats::Single(server) => server.client_url(),
            Nats::Cluster(cluster) => cluster.client_urls(),
        };
        let redis = RedisServer::start(&store.path().join("redis")).await?;
        let jwt_secret = random_secret();
        processes.push(("redis-server".to_owned(), redis.pid()));
        let settings = RoleSettings { nats_url: nats_url.clone(), redis_url: redis.url(), jwt_secret: jwt_secret.clone(), extra_environment };
        let mut roles = Vec::new();
        let mut addresses = Vec::new();
        let http = reqwest::Client::new();
        for gateway in 0..gateways {
            let address = free_address()?;
            let log_path = store.path().join(format!("gateway-{gateway}.log"));
            let child = spawn_role(natter_binary, "gateway", &settings, Some(address), &log_path)?;
            processes.push((format!("gateway-{gateway}"), child.id().context("gateway pid")?));
            roles.push(child);
            wait_for_health(&http, address).await?;
            addresses.push(address);
        }
        for fanout in 0..fanouts {
            let log_path = store.path().join(format!("fanout-{fanout}.log"));
            let child = spawn_role(natter_binary, "fanout", &settings, None, &log_path)?;
            processes.push((format!("fanout-{fanout}"), child.id().context("fanout pid")?));
            roles.push(child);
        }
        wait_for_fanout_consumer(&nats_url).await?;
        let target = Target { gateways: addresses, nats_url, jwt_secret, processes };
        Ok(SystemUnderTest { target, roles, _redis: redis, nats, _store: store })
    }

    /// The last lines of every role's log, to explain a failed run before the store dir goes away.
    pub fn role_log_tails(&self, lines: usize) -> String {
        let mut text = String::new();
        let mut entries: Vec<_> = std::fs::read_dir(self._store.path()).into_iter().flatten().flatten().filter(|entry| entry.file_name().to_string_lossy().ends_with(".log")).collect();
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let contents = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let tail: Vec<&str> = contents.lines().rev().take(lines).collect();
            text.push_str(&format!("--- {}\n{}\n", entry.file_name().to_string_lossy(), tail.into_iter().rev().collect::<Vec<_>>().join("\n")));
        }
        text
    }

    /// SIGTERM to every role, then wait (they close sockets and flush); the servers go when dropped.
    pub async fn stop(mut self) {
        for role in &self.roles {
            if let Some(pid) = role.id() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
            }
        }
        for role in &mut self.roles {
            let _ = tokio::time::timeout(Duration::from_secs(10), role.wait()).await;
        }
    }
}

/// The natter binary beside this executable (both come out of `cargo build --release`).
pub fn natter_binary_beside_this_one() -> anyhow::Result<PathBuf> {
    let this = std::env::current_exe().context("cannot find this executable")?;
    Ok(this.with_file_name("natter"))
}

fn new_store_dir() -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new().prefix("natter-loadgen-").tempdir().context("failed to create a store dir")
}

fn random_secret() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..48).map(|_| rng.sample(rand::distr::Alphanumeric) as char).collect()
}

fn free_address() -> anyhow::Result<SocketAddr> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").context("failed to find a free port")?;
    Ok(probe.local_addr()?)
}

/// What every role of one run is started with.
struct RoleSettings {
    nats_url: String,
    redis_url: String,
    jwt_secret: String,
    extra_environment: Vec<(String, String)>,
}

fn spawn_role(binary: &Path, role: &str, settings: &RoleSettings, listen: Option<SocketAddr>, log_path: &Path) -> anyhow::Result<Child> {
    let log = std::fs::File::create(log_path).with_context(|| format!("failed to create {}", log_path.display()))?;
    let mut command = tokio::process::Command::new(binary);
    command
        .arg(role)
        .env("NATTER_NATS_URL", &settings.nats_url)
        .env("NATTER_REDIS_URL", &settings.redis_url)
        .env("NATTER_JWT_SECRET", &settings.jwt_secret)
        .env("NATTER_DEV_MODE", "0")
        // Thousands of simulated users share a few loopback addresses: only per-user limits make sense here.
        .env("NATTER_RATE_SEND_PER_ADDRESS", "off")
        // The catch-up scenario's one sender writes 1,000 messages at once; the check still runs (and costs what it costs).
        .env("NATTER_RATE_SEND_PER_USER", "1000000/1000000")
        // The soak reconnects every client several times a second, which the production limit calls abuse.
        .env("NATTER_RATE_CONNECT_PER_USER", "1000000/1000000")
        .env("NATTER_RATE_CONNECT_PER_ADDRESS", "off")
        .env("NATTER_RATE_UPLOAD_PER_ADDRESS", "off")
        // Every simulated user sends the same text, which is exactly what the spam signal looks for.
        .env("NATTER_SPAM_MAX_CONVERSATIONS", "0")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    if let Some(listen) = listen {
        command.env("NATTER_LISTEN", listen.to_string());
    }
    command.envs(settings.extra_environment.iter().map(|(key, value)| (key, value)));
    command.spawn().with_context(|| format!("failed to start {} {role}", binary.display()))
}

async fn wait_for_health(http: &reqwest::Client, address: SocketAddr) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    let url = format!("http://{address}/healthz");
    loop {
        if http.get(&url).send().await.is_ok_and(|response| response.status().is_success()) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("gateway at {address} did not answer /healthz within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_for_fanout_consumer(nats_url: &str) -> anyhow::Result<()> {
    let jetstream = async_nats::jetstream::new(devservers::connect_nats(nats_url).await?);
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(stream) = jetstream.get_stream(subjects::MESSAGE_STREAM).await
            && stream.consumer_info(subjects::FANOUT_CONSUMER).await.is_ok()
        {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the fanout consumer did not appear within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates every group over HTTP, each by its first member naming up to `members_at_creation` others,
/// then adds the rest one by one (as the owner); returns the conversation id per group.
pub async fn create_groups(target: &Target, population: Population, members_at_creation: usize) -> anyhow::Result<Vec<String>> {
    let http = reqwest::Client::new();
    let creations = futures::stream::iter(0..population.groups).map(|group| {
        let http = http.clone();
        async move {
            let mut members = population.members_of(group).map(crate::plan::user_name);
            let owner = members.next().expect("groups have members");
            let others: Vec<String> = members.collect();
            let named_now = others.len().min(members_at_creation.max(1));
            let response = http
                .post(format!("{}/v1/conversations", target.http_url(group)))
                .bearer_auth(target.token(&owner))
                .json(&serde_json::json!({"kind": "group", "title": format!("loadgen {group}"), "members": others[..named_now]}))
                .send()
                .await
                .with_context(|| format!("create group {group}"))?;
            let status = response.status();
            let body: serde_json::Value = response.json().await.with_context(|| format!("create group {group}: body"))?;
            anyhow::ensure!(status.is_success(), "create group {group}: {status} {body}");
            let conversation = body["id"].as_str().map(str::to_owned).with_context(|| format!("create group {group}: no id in {body}"))?;
            add_members(target, &http, group, &conversation, &owner, &others[named_now..]).await?;
            Ok(conversation)
        }
    });
    creations.buffered(SETUP_CONCURRENCY).collect::<Vec<_>>().await.into_iter().collect()
}

/// `POST /v1/conversations/{id}/members` for each of `users`, as the group's owner.
async fn add_members(target: &Target, http: &reqwest::Client, group: usize, conversation: &str, owner: &str, users: &[String]) -> anyhow::Result<()> {
    if users.is_empty() {
        return Ok(());
    }
    eprintln!("setup: adding {} more member(s) to group {group}", users.len());
    let owner_token = target.token(owner);
    let additions = futures::stream::iter(users).map(|user| {
        let request = http.post(format!("{}/v1/conversations/{conversation}/members", target.http_url(group))).bearer_auth(&owner_token).json(&serde_json::json!({"user": user}));
        async move {
            let response = request.send().await.with_context(|| format!("add {user} to group {group}"))?;
            let status = response.status();
            // The reply lists every member: read it only when something went wrong.
            if !status.is_success() {
                let body = response.text().await.unwrap_or_default();
                anyhow::bail!("add {user} to group {group}: {status} {body}");
            }
            anyhow::Ok(())
        }
    });
    for outcome in additions.buffer_unordered(SETUP_CONCURRENCY).collect::<Vec<_>>().await {
        outcome?;
    }
    Ok(())
}
