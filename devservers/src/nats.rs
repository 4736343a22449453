//! A local `nats-server` with JetStream on a server-chosen port, owned by a value that kills it on drop.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::binaries::nats_server_binary;
use crate::child_process::{
    LoggedChild, READINESS_ATTEMPT_TIMEOUT, READINESS_POLL_INTERVAL, START_DEADLINE,
    prepare_data_dir, spawn_logged,
};

const LOG_FILE_NAME: &str = "nats-server.log";
const PORTS_FILE_SUFFIX: &str = ".ports";

/// How to start a [`NatsServer`] beyond the store directory.
#[derive(Debug, Clone, Default)]
pub struct NatsServerOptions {
    /// Client port; `None` lets the server choose a free one (`-p -1`), which is what tests want.
    pub port: Option<u16>,
    /// A config file (e.g. cluster settings); the flags for address, port, JetStream and store dir override it.
    pub config_file: Option<PathBuf>,
    /// Own process group, so a terminal Ctrl-C reaches only the parent (see the launcher); tests leave it off.
    pub separate_process_group: bool,
    /// Serve monitoring (`/healthz`, `/routez`, `/jsz`) on 127.0.0.1, on a free port kept across restarts.
    pub monitoring: bool,
    /// Be one node of a cluster; see [`RouteOptions`].
    pub routes: Option<RouteOptions>,
    /// Extra environment for the server, which a config file can read as `$NAME` (e.g. users' passwords).
    pub environment: Vec<(OsString, OsString)>,
}

/// A cluster node's routes: it listens for them on a free 127.0.0.1 port, kept across restarts.
#[derive(Debug, Clone, Default)]
pub struct RouteOptions {
    /// `nats-route://host:port` of the other nodes, solicited (and retried) for as long as the server runs.
    pub routes: Vec<String>,
    /// `host:port` this node tells the others to reach it at (gossip), instead of its route listener.
    pub cluster_advertise: Option<String>,
    /// Keep the other nodes' addresses out of the `INFO` sent to clients (`--no_advertise`), so clients
    /// use only the URLs they were given.
    pub no_advertise_to_clients: bool,
    /// The route port to listen on; `None` lets the server choose. A cluster whose nodes route to each
    /// other directly (no proxies) must know every node's route port before starting any of them.
    pub listen_port: Option<u16>,
}

/// The ports a server bound, from its ports file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BoundPorts {
    client: u16,
    monitoring: Option<u16>,
    cluster: Option<u16>,
}

/// A running `nats-server` child process listening on 127.0.0.1.
pub struct NatsServer {
    process: LoggedChild,
    port: u16,
    monitoring_port: Option<u16>,
    cluster_port: Option<u16>,
    store_dir: PathBuf,
    options: NatsServerOptions,
}

impl NatsServer {
    /// Starts nats-server with JetStream on a free port, keeping its store, log and ports file in `store_dir`.
    pub async fn start(store_dir: &Path) -> anyhow::Result<NatsServer> {
        Self::start_with_options(store_dir, NatsServerOptions::default()).await
    }

    /// Starts nats-server from `config_file` (e.g. one node of a test cluster) on a free client port.
    pub async fn start_with_config(
        config_file: &Path,
        store_dir: &Path,
    ) -> anyhow::Result<NatsServer> {
        let options = NatsServerOptions {
            config_file: Some(config_file.to_path_buf()),
            ..NatsServerOptions::default()
        };
        Self::start_with_options(store_dir, options).await
    }

    pub async fn start_with_options(
        store_dir: &Path,
        options: NatsServerOptions,
    ) -> anyhow::Result<NatsServer> {
        let store_dir = prepare_data_dir(store_dir)?;
        let requested = RequestedPorts {
            client: options.port,
            monitoring: None,
            cluster: options.routes.as_ref().and_then(|routes| routes.listen_port),
        };
        let (process, ports) = spawn_and_wait_until_ready(&store_dir, &options, requested).await?;
        let port = ports.client;
        tracing::debug!(port, pid = process.pid, store_dir = %store_dir.display(), "nats-server started");
        Ok(NatsServer {
            process,
            port,
            monitoring_port: ports.monitoring,
            cluster_port: ports.cluster,
            store_dir,
            options,
        })
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn client_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The monitoring port, if [`NatsServerOptions::monitoring`] was asked for.
    pub fn monitoring_port(&self) -> Option<u16> {
        self.monitoring_port
    }

    /// The port this node listens on for routes, if it is a cluster node.
    pub fn cluster_port(&self) -> Option<u16> {
        self.cluster_port
    }

    /// The pid of the current (or, after `kill`/`stop`, the last) server process.
    pub fn pid(&self) -> u32 {
        self.process.pid
    }

    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// The file holding the server's stdout and stderr across restarts.
    pub fn log_path(&self) -> &Path {
        &self.process.log_path
    }

    /// SIGKILL, as a crash would; for chaos tests. Waits until the process is gone.
    pub async fn kill(&mut self) {
        self.process.kill().await;
    }

    /// Starts the server again on the same ports and store dir, stopping it first if it is still running.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.process.stop().await;
        let requested = RequestedPorts {
            client: Some(self.port),
            monitoring: self.monitoring_port,
            cluster: self.cluster_port,
        };
        let (process, ports) =
            spawn_and_wait_until_ready(&self.store_dir, &self.options, requested)
                .await
                .with_context(|| format!("failed to restart nats-server on port {}", self.port))?;
        tracing::debug!(
            port = ports.client,
            pid = process.pid,
            "nats-server restarted"
        );
        self.process = process;
        Ok(())
    }

    /// SIGTERM for a clean shutdown, SIGKILL if it takes longer than the grace period.
    pub async fn stop(&mut self) {
        self.process.stop().await;
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.process.kill_from_drop();
    }
}

/// Ports to bind; `None` lets the server choose (a restart asks for the ones it had).
struct RequestedPorts {
    client: Option<u16>,
    monitoring: Option<u16>,
    cluster: Option<u16>,
}

fn port_argument(port: Option<u16>) -> String {
    port.map_or_else(|| "-1".to_string(), |port| port.to_string())
}

async fn spawn_and_wait_until_ready(
    store_dir: &Path,
    options: &NatsServerOptions,
    requested: RequestedPorts,
) -> anyhow::Result<(LoggedChild, BoundPorts)> {
    let port = requested.client;
    let binary = nats_server_binary()?;
    remove_stale_ports_files(store_dir)?;

    let mut args: Vec<OsString> = Vec::new();
    if let Some(config_file) = &options.config_file {
        args.extend(["-c".into(), config_file.into()]);
    }
    args.extend([
        "-js".into(),
        "-a".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port_argument(port).into(),
        "-sd".into(),
        store_dir.into(),
        // The server writes the ports it actually bound here once its listeners are up.
        "--ports_file_dir".into(),
        store_dir.into(),
    ]);
    if options.monitoring {
        // Without an `http` host in the config file, monitoring binds the `-a` address.
        args.extend(["-m".into(), port_argument(requested.monitoring).into()]);
    }
    if let Some(routes) = &options.routes {
        let listen = format!("nats://127.0.0.1:{}", port_argument(requested.cluster));
        args.extend(["--cluster".into(), listen.into()]);
        if !routes.routes.is_empty() {
            args.extend(["--routes".into(), routes.routes.join(",").into()]);
        }
        if let Some(advertise) = &routes.cluster_advertise {
            args.extend(["--cluster_advertise".into(), advertise.into()]);
        }
        if routes.no_advertise_to_clients {
            args.push("--no_advertise".into());
        }
    }
    let log_path = store_dir.join(LOG_FILE_NAME);
    let mut process = spawn_logged(&binary, &args, &log_path, options.separate_process_group, &options.environment)?;

    let deadline = Instant::now() + START_DEADLINE;
    let bound_ports = loop {
        process.ensure_still_running("nats-server")?;
        if let Some(bound_ports) = read_bound_ports(store_dir, process.pid)? {
            break bound_ports;
        }
        if Instant::now() >= deadline {
            return Err(process.start_timeout_error("nats-server", "write its ports file"));
        }
        tokio::time::sleep(READINESS_POLL_INTERVAL).await;
    };
    let bound_port = bound_ports.client;
    if let Some(requested_port) = port
        && requested_port != bound_port
    {
        bail!(
            "nats-server was asked for port {requested_port} but reports {bound_port}; log {}",
            log_path.display()
        );
    }
    loop {
        process.ensure_still_running("nats-server")?;
        if receives_info_line(bound_port).await {
            break;
        }
        if Instant::now() >= deadline {
            return Err(process.start_timeout_error("nats-server", "accept client connections"));
        }
        tokio::time::sleep(READINESS_POLL_INTERVAL).await;
    }
    Ok((process, bound_ports))
}

/// Reads the bound ports from `<executable>_<pid>.ports`; `None` while the file is missing or half-written.
fn read_bound_ports(ports_file_dir: &Path, pid: u32) -> anyhow::Result<Option<BoundPorts>> {
    // The file is named after the executable, which an override may have renamed, so match on the pid only.
    let wanted_suffix = format!("_{pid}{PORTS_FILE_SUFFIX}");
    let entries = std::fs::read_dir(ports_file_dir)
        .with_context(|| format!("failed to list {}", ports_file_dir.display()))?;
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .ends_with(&wanted_suffix)
        {
            continue;
        }
        let Ok(contents) = std::fs::read_to_string(entry.path()) else {
            return Ok(None);
        };
        return Ok(parse_bound_ports(&contents));
    }
    Ok(None)
}

/// Parses `{"nats":["nats://127.0.0.1:40041"],"monitoring":["http://127.0.0.1:8222"],"cluster":[...]}`.
fn parse_bound_ports(ports_file_contents: &str) -> Option<BoundPorts> {
    let ports: serde_json::Value = serde_json::from_str(ports_file_contents).ok()?;
    let first_port = |key: &str| -> Option<u16> {
        let url = ports.get(key)?.as_array()?.first()?.as_str()?;
        url.rsplit(':').next()?.parse().ok()
    };
    Some(BoundPorts {
        client: first_port("nats")?,
        monitoring: first_port("monitoring"),
        cluster: first_port("cluster"),
    })
}

/// A SIGKILLed server leaves its ports file behind; clear them so the directory does not fill up.
fn remove_stale_ports_files(ports_file_dir: &Path) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(ports_file_dir)
        .with_context(|| format!("failed to list {}", ports_file_dir.display()))?;
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .ends_with(PORTS_FILE_SUFFIX)
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// True once a client connection on `port` receives the server's `INFO` line.
async fn receives_info_line(port: u16) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let mut first_bytes = [0u8; 5];
        stream.read_exact(&mut first_bytes).await.ok()?;
        Some(&first_bytes == b"INFO ")
    };
    matches!(
        tokio::time::timeout(READINESS_ATTEMPT_TIMEOUT, attempt).await,
        Ok(Some(true))
    )
}

#[cfg(test)]
mod tests {
    use super::{BoundPorts, parse_bound_ports};

    fn check(contents: &str, expected: Option<u16>) {
        let client_port = parse_bound_ports(contents).map(|ports| ports.client);
        assert_eq!(client_port, expected, "input: {contents:?}");
    }

    #[test]
    fn reads_ports_files() {
        check(r#"{"nats":["nats://127.0.0.1:40041"]}"#, Some(40041));
        check(
            r#"{"nats":["nats://127.0.0.1:4222"],"monitoring":["http://127.0.0.1:8222"]}"#,
            Some(4222),
        );
        assert_eq!(
            parse_bound_ports(
                r#"{"nats":["nats://127.0.0.1:1"],"monitoring":["http://127.0.0.1:2"],"cluster":["nats://127.0.0.1:3"]}"#
            ),
            Some(BoundPorts {
                client: 1,
                monitoring: Some(2),
                cluster: Some(3)
            })
        );
        check(r#"{"nats":["nats://127.0.0.1:40"#, None);
        check(r#"{"monitoring":["http://127.0.0.1:8222"]}"#, None);
        check("", None);
    }
}
