//! A local `redis-server` configured as a cache on a free port, owned by a value that kills it on drop.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::binaries::redis_server_binary;
use crate::child_process::{
    LoggedChild, READINESS_ATTEMPT_TIMEOUT, READINESS_POLL_INTERVAL, START_DEADLINE,
    prepare_data_dir, spawn_logged,
};

const LOG_FILE_NAME: &str = "redis-server.log";

/// Another process can take the free port between our probe and redis binding it; that many tries is plenty.
const PORT_ATTEMPTS: usize = 5;

/// How to start a [`RedisServer`] beyond the data directory.
#[derive(Debug, Clone, Default)]
pub struct RedisServerOptions {
    /// Port to listen on; `None` picks a free one (redis has no equivalent of nats' `-p -1`).
    pub port: Option<u16>,
    /// Own process group, so a terminal Ctrl-C reaches only the parent (see the launcher); tests leave it off.
    pub separate_process_group: bool,
}

/// A running `redis-server` child process listening on 127.0.0.1, keeping nothing on disk.
pub struct RedisServer {
    process: LoggedChild,
    port: u16,
    data_dir: PathBuf,
    options: RedisServerOptions,
}

impl RedisServer {
    /// Starts redis-server on a free port with its working directory and log in `data_dir`.
    pub async fn start(data_dir: &Path) -> anyhow::Result<RedisServer> {
        Self::start_with_options(data_dir, RedisServerOptions::default()).await
    }

    pub async fn start_with_options(
        data_dir: &Path,
        options: RedisServerOptions,
    ) -> anyhow::Result<RedisServer> {
        let data_dir = prepare_data_dir(data_dir)?;
        let mut last_bind_failure = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = match options.port {
                Some(port) => port,
                None => free_local_port()?,
            };
            match spawn_and_wait_until_ready(&data_dir, &options, port).await? {
                StartOutcome::Ready(process) => {
                    tracing::debug!(port, pid = process.pid, data_dir = %data_dir.display(), "redis-server started");
                    return Ok(RedisServer {
                        process,
                        port,
                        data_dir,
                        options,
                    });
                }
                StartOutcome::PortTaken(error) if options.port.is_none() => {
                    last_bind_failure = Some(error)
                }
                StartOutcome::PortTaken(error) => return Err(error),
            }
        }
        Err(last_bind_failure.expect("the loop runs at least once")).with_context(|| {
            format!("redis-server failed to bind a free port {PORT_ATTEMPTS} times")
        })
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The pid of the current (or, after `kill`/`stop`, the last) server process.
    pub fn pid(&self) -> u32 {
        self.process.pid
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The file holding the server's output across restarts.
    pub fn log_path(&self) -> &Path {
        &self.process.log_path
    }

    /// SIGKILL, as a crash would; for chaos tests. Waits until the process is gone.
    pub async fn kill(&mut self) {
        self.process.kill().await;
    }

    /// Starts the server again on the same port (empty: it is a cache), stopping it first if still running.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.process.stop().await;
        match spawn_and_wait_until_ready(&self.data_dir, &self.options, self.port).await? {
            StartOutcome::Ready(process) => {
                tracing::debug!(
                    port = self.port,
                    pid = process.pid,
                    "redis-server restarted"
                );
                self.process = process;
                Ok(())
            }
            StartOutcome::PortTaken(error) => Err(error)
                .with_context(|| format!("failed to restart redis-server on port {}", self.port)),
        }
    }

    /// SIGTERM for a clean shutdown, SIGKILL if it takes longer than the grace period.
    pub async fn stop(&mut self) {
        self.process.stop().await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.process.kill_from_drop();
    }
}

#[expect(
    clippy::large_enum_variant,
    reason = "built once per start attempt; boxing would buy nothing"
)]
enum StartOutcome {
    Ready(LoggedChild),
    /// Redis exited because the port was in use: worth retrying on another port.
    PortTaken(anyhow::Error),
}

async fn spawn_and_wait_until_ready(
    data_dir: &Path,
    options: &RedisServerOptions,
    port: u16,
) -> anyhow::Result<StartOutcome> {
    let binary = redis_server_binary()?;
    let args: Vec<OsString> = [
        "--port".into(),
        port.to_string().into(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--daemonize".into(),
        "no".into(),
        "--dir".into(),
        data_dir.as_os_str().to_owned(),
        // A cache: no RDB snapshots and no append-only file, so restarts start empty and nothing blocks on disk.
        "--save".into(),
        "".into(),
        "--appendonly".into(),
        "no".into(),
        // Log to stdout, which goes to our log file.
        "--logfile".into(),
        "".into(),
    ]
    .into_iter()
    .collect();
    let log_path = data_dir.join(LOG_FILE_NAME);
    let log_length_before_start = std::fs::metadata(&log_path)
        .map(|metadata| metadata.len())
        .unwrap_or(0);
    let mut process = spawn_logged(&binary, &args, &log_path, options.separate_process_group, &[])?;

    let deadline = Instant::now() + START_DEADLINE;
    loop {
        if let Err(exit_error) = process.ensure_still_running("redis-server") {
            if this_start_failed_to_bind(&log_path, log_length_before_start) {
                return Ok(StartOutcome::PortTaken(exit_error));
            }
            return Err(exit_error);
        }
        if answers_as_process(port, process.pid).await {
            return Ok(StartOutcome::Ready(process));
        }
        if Instant::now() >= deadline {
            return Err(process.start_timeout_error("redis-server", "answer INFO"));
        }
        tokio::time::sleep(READINESS_POLL_INTERVAL).await;
    }
}

/// Looks only at what this start wrote to the shared log, so an old bind failure does not count.
fn this_start_failed_to_bind(log_path: &Path, log_length_before_start: u64) -> bool {
    let Ok(contents) = std::fs::read(log_path) else {
        return false;
    };
    let start = (log_length_before_start as usize).min(contents.len());
    String::from_utf8_lossy(&contents[start..]).contains("Address already in use")
}

/// Asks the kernel for a free port, then releases it for redis to bind.
fn free_local_port() -> anyhow::Result<u16> {
    let probe =
        std::net::TcpListener::bind("127.0.0.1:0").context("failed to find a free local port")?;
    Ok(probe
        .local_addr()
        .context("failed to read the probe socket's address")?
        .port())
}

/// True once the redis on `port` answers `INFO server` with our child's pid. Checking the pid matters: if
/// another test's redis won the race for the port, ours exits, but the other one would happily answer a PING.
async fn answers_as_process(port: u16, expected_pid: u32) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream.write_all(b"INFO server\r\n").await.ok()?;
        let mut reply = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let read = stream.read(&mut chunk).await.ok()?;
            if read == 0 {
                return None;
            }
            reply.extend_from_slice(&chunk[..read]);
            if let Some(reported_pid) = reported_process_id(&reply) {
                return Some(reported_pid == expected_pid);
            }
            // An error reply (e.g. `-LOADING`) is one line: no point waiting for a pid that will not come.
            if reply.starts_with(b"-") && reply.ends_with(b"\r\n") {
                return None;
            }
        }
    };
    matches!(
        tokio::time::timeout(READINESS_ATTEMPT_TIMEOUT, attempt).await,
        Ok(Some(true))
    )
}

/// Finds `process_id:1234` in a (possibly partial) `INFO` reply; `None` until the whole line has arrived.
fn reported_process_id(info_reply: &[u8]) -> Option<u32> {
    let text = String::from_utf8_lossy(info_reply);
    let after_key = &text[text.find("\r\nprocess_id:")? + "\r\nprocess_id:".len()..];
    let line_end = after_key.find("\r\n")?;
    after_key[..line_end].trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::reported_process_id;

    fn check(reply: &str, expected: Option<u32>) {
        assert_eq!(
            reported_process_id(reply.as_bytes()),
            expected,
            "input: {reply:?}"
        );
    }

    #[test]
    fn reads_the_pid_from_info_replies() {
        check(
            "$60\r\n# Server\r\nredis_version:7.0.15\r\nprocess_id:4242\r\ntcp_port:6379\r\n",
            Some(4242),
        );
        check(
            "$60\r\n# Server\r\nredis_version:7.0.15\r\nprocess_id:42",
            None,
        );
        check("-LOADING Redis is loading the dataset in memory\r\n", None);
        check("", None);
    }
}
