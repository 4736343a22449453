//! A local `clamd` on a free port, loading only the signature database shipped in the repo, killed on drop.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::child_process::{LoggedChild, READINESS_POLL_INTERVAL, log_tail, prepare_data_dir, spawn_logged};

/// Overrides the PATH (and /usr/sbin) lookup of `clamd`.
pub const CLAMD_BIN_ENV: &str = "NATTER_CLAMD_BIN";

/// clamd loads its database before it binds; even a one-signature database takes seconds on a busy 2-core box.
const CLAMD_START_DEADLINE: Duration = Duration::from_secs(60);
/// A PING to a loaded clamd answers in milliseconds; longer means it is still loading.
const PING_TIMEOUT: Duration = Duration::from_millis(500);
/// clamd refuses a stream longer than this with "INSTREAM size limit exceeded"; above the default 25 MiB upload cap.
const STREAM_MAX_LENGTH: &str = "32M";
const LOG_FILE_NAME: &str = "clamd.log";
const CONFIG_FILE_NAME: &str = "clamd.conf";
const DATABASE_DIR_NAME: &str = "signatures";
/// Another process can take the free port between our probe and clamd binding it.
const PORT_ATTEMPTS: usize = 3;

/// A running clamd listening on 127.0.0.1 with the signatures copied from a directory.
pub struct ClamdServer {
    process: LoggedChild,
    port: u16,
}

impl ClamdServer {
    /// Copies the `*.ndb`/`*.hdb`/… files of `signature_dir` into `data_dir`, writes a clamd.conf there and starts
    /// clamd in the foreground on a free port; returns once it answers PING.
    pub async fn start(signature_dir: &Path, data_dir: &Path) -> anyhow::Result<ClamdServer> {
        let data_dir = prepare_data_dir(data_dir)?;
        let database_dir = data_dir.join(DATABASE_DIR_NAME);
        copy_signatures(signature_dir, &database_dir)?;
        let binary = clamd_binary()?;
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_local_port()?;
            let config_path = data_dir.join(CONFIG_FILE_NAME);
            std::fs::write(&config_path, clamd_config(&database_dir, &data_dir, port))
                .with_context(|| format!("failed to write {}", config_path.display()))?;
            let args: Vec<OsString> = vec!["--foreground".into(), "-c".into(), config_path.into_os_string()];
            let mut process = spawn_logged(&binary, &args, &data_dir.join(LOG_FILE_NAME), false, &[])?;
            match wait_until_ready(&mut process, port).await {
                Ok(()) => {
                    tracing::debug!(port, pid = process.pid, "clamd started");
                    return Ok(ClamdServer { process, port });
                }
                Err(error) => {
                    process.kill().await;
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.expect("the loop runs at least once"))
    }

    /// `127.0.0.1:PORT`, as clamav-client's `Tcp` host_address wants it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn log_path(&self) -> &Path {
        &self.process.log_path
    }

    /// SIGTERM, then SIGKILL after the grace period.
    pub async fn stop(&mut self) {
        self.process.stop().await;
    }
}

impl Drop for ClamdServer {
    fn drop(&mut self) {
        self.process.kill_from_drop();
    }
}

/// Returns `$NATTER_CLAMD_BIN`, else `clamd` on PATH, else Debian's `/usr/sbin/clamd` (not on a user's PATH).
pub fn clamd_binary() -> anyhow::Result<PathBuf> {
    if let Some(value) = std::env::var_os(CLAMD_BIN_ENV).filter(|value| !value.is_empty()) {
        let path = PathBuf::from(value);
        anyhow::ensure!(path.is_file(), "{CLAMD_BIN_ENV} is set to {}, which is not a file", path.display());
        return Ok(path);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|search_path| std::env::split_paths(&search_path).collect::<Vec<_>>())
        .map(|directory| directory.join("clamd"))
        .find(|candidate| candidate.is_file());
    on_path
        .or_else(|| Some(PathBuf::from("/usr/sbin/clamd")).filter(|path| path.is_file()))
        .with_context(|| format!("clamd not found: run `cargo xtask setup` (installs Debian's clamav-daemon) or set {CLAMD_BIN_ENV}"))
}

fn copy_signatures(signature_dir: &Path, database_dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(database_dir).with_context(|| format!("failed to create {}", database_dir.display()))?;
    let mut copied = 0;
    for entry in std::fs::read_dir(signature_dir).with_context(|| format!("failed to read {}", signature_dir.display()))? {
        let path = entry?.path();
        // Only database files: clamd would try to load a README as a database and fail.
        let is_database = path.extension().and_then(|extension| extension.to_str()).is_some_and(|extension| {
            matches!(extension, "ndb" | "hdb" | "hsb" | "mdb" | "ldb" | "cdb" | "ign2" | "fp" | "sfp")
        });
        if is_database {
            std::fs::copy(&path, database_dir.join(path.file_name().expect("a read_dir entry has a name")))
                .with_context(|| format!("failed to copy {}", path.display()))?;
            copied += 1;
        }
    }
    // clamd refuses an empty database directory; say so before it does, with the path.
    anyhow::ensure!(copied > 0, "no signature files (*.ndb, *.hdb, …) in {}", signature_dir.display());
    Ok(())
}

/// `ScanImageFuzzyHash no`: the fuzzy hash decodes every image, so a decompression bomb stalls clamd itself;
/// our signatures use no fuzzy hashes, and the media worker decodes images under its own limits.
fn clamd_config(database_dir: &Path, data_dir: &Path, port: u16) -> String {
    format!(
        "DatabaseDirectory {database}\n\
         TCPSocket {port}\n\
         TCPAddr 127.0.0.1\n\
         Foreground yes\n\
         StreamMaxLength {STREAM_MAX_LENGTH}\n\
         LogFile {log}\n\
         LogTime yes\n\
         PidFile {pid}\n\
         User root\n\
         SelfCheck 3600\n\
         ScanImageFuzzyHash no\n",
        database = database_dir.display(),
        log = data_dir.join("clamd-own.log").display(),
        pid = data_dir.join("clamd.pid").display(),
    )
}

async fn wait_until_ready(process: &mut LoggedChild, port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + CLAMD_START_DEADLINE;
    loop {
        process.ensure_still_running("clamd")?;
        if answers_ping(port).await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "clamd (pid {}) did not answer PING within {CLAMD_START_DEADLINE:?}; log {}:\n{}",
                process.pid,
                process.log_path.display(),
                log_tail(&process.log_path)
            );
        }
        tokio::time::sleep(READINESS_POLL_INTERVAL * 10).await;
    }
}

async fn answers_ping(port: u16) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream.write_all(b"zPING\0").await.ok()?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.ok()?;
        Some(reply == b"PONG\0")
    };
    matches!(tokio::time::timeout(PING_TIMEOUT, attempt).await, Ok(Some(true)))
}

fn free_local_port() -> anyhow::Result<u16> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").context("failed to find a free local port")?;
    Ok(probe.local_addr().context("failed to read the probe socket's address")?.port())
}
