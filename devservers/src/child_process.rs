//! Plumbing shared by both servers: spawning a child with a log file, stopping it, and explaining failures.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// How long a server may take from spawn to answering on its port. Healthy starts take ~50 ms; the margin
/// covers JetStream recovering a large store after a crash on a busy 2-core machine.
pub(crate) const START_DEADLINE: Duration = Duration::from_secs(30);

/// How long a server gets to shut down cleanly after SIGTERM before it is killed.
pub(crate) const STOP_GRACE_PERIOD: Duration = Duration::from_secs(10);

/// How often start-up checks whether the server is ready.
pub(crate) const READINESS_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// A local server answers a readiness probe in well under a millisecond; a probe that takes longer is talking to
/// something that accepted the connection but will never answer (e.g. a socket that merely holds the port).
pub(crate) const READINESS_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(250);

/// How many trailing log lines an error message quotes.
const LOG_LINES_IN_ERRORS: usize = 20;

/// A server child process whose output goes to `log_path`.
pub(crate) struct LoggedChild {
    pub(crate) child: Child,
    pub(crate) pid: u32,
    pub(crate) log_path: PathBuf,
}

/// Spawns `program args`, appending its stdout and stderr to `log_path` (restarts add to the same file).
///
/// `separate_process_group` puts the child in its own process group so that a Ctrl-C in the terminal reaches
/// only the parent, which can then stop the server in order; the price is that a SIGKILLed parent leaves the
/// server running, so tests keep the default (same group: nextest and the terminal signal the whole group).
pub(crate) fn spawn_logged(
    program: &Path,
    args: &[OsString],
    log_path: &Path,
    separate_process_group: bool,
    environment: &[(OsString, OsString)],
) -> anyhow::Result<LoggedChild> {
    let mut log_file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .with_context(|| format!("failed to open log file {}", log_path.display()))?;
    let command_line = std::iter::once(program.as_os_str())
        .chain(args.iter().map(OsString::as_os_str))
        // Quote empty arguments (redis' `--save ""`) so the logged line can be pasted into a shell.
        .map(|part| {
            if part.is_empty() {
                "\"\"".into()
            } else {
                part.to_string_lossy()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    writeln!(log_file, "==== devservers: starting {command_line}")
        .with_context(|| format!("failed to write log file {}", log_path.display()))?;
    let stderr_log_file = log_file
        .try_clone()
        .with_context(|| format!("failed to duplicate log file handle {}", log_path.display()))?;

    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_file))
        .stderr(Stdio::from(stderr_log_file))
        .kill_on_drop(true)
        .envs(environment.iter().map(|(name, value)| (name, value)));
    if separate_process_group {
        command.process_group(0);
    }
    let child = command.spawn().with_context(|| {
        format!(
            "failed to spawn `{command_line}` (log: {})",
            log_path.display()
        )
    })?;
    let pid = child.id().context("a just-spawned child has no pid")?;
    Ok(LoggedChild {
        child,
        pid,
        log_path: log_path.to_path_buf(),
    })
}

impl LoggedChild {
    /// Fails if the child has already exited, quoting the end of its log.
    pub(crate) fn ensure_still_running(&mut self, server_name: &str) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(exit_status)) => Err(anyhow::anyhow!(
                "{server_name} (pid {}) exited during start-up with {exit_status}; log {}:\n{}",
                self.pid,
                self.log_path.display(),
                log_tail(&self.log_path)
            )),
            Err(error) => Err(error)
                .with_context(|| format!("failed to check whether {server_name} is running")),
        }
    }

    /// Builds the error for a server that did not become ready in time.
    pub(crate) fn start_timeout_error(
        &self,
        server_name: &str,
        waiting_for: &str,
    ) -> anyhow::Error {
        anyhow::anyhow!(
            "{server_name} (pid {}) did not {waiting_for} within {:?}; log {}:\n{}",
            self.pid,
            START_DEADLINE,
            self.log_path.display(),
            log_tail(&self.log_path)
        )
    }

    /// SIGKILL and wait for the process to be reaped.
    pub(crate) async fn kill(&mut self) {
        // An error here means the child has already exited and been reaped: nothing left to kill.
        let _ = self.child.kill().await;
    }

    /// SIGTERM, wait up to the grace period, then SIGKILL.
    pub(crate) async fn stop(&mut self) {
        // `id()` is None once the child has been reaped, so a recycled pid is never signalled.
        if let Some(pid) = self.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            if tokio::time::timeout(STOP_GRACE_PERIOD, self.child.wait())
                .await
                .is_ok()
            {
                return;
            }
            tracing::warn!(pid, log = %self.log_path.display(), "server ignored SIGTERM, killing it");
        }
        self.kill().await;
    }

    /// For `Drop`, which cannot await: SIGKILL, then briefly poll for the exit so that the port and data
    /// directory are released before a temp dir declared next to the server is deleted.
    pub(crate) fn kill_from_drop(&mut self) {
        if self.child.start_kill().is_err() {
            return; // Already exited and reaped.
        }
        let give_up_at = std::time::Instant::now() + Duration::from_secs(2);
        while std::time::Instant::now() < give_up_at {
            match self.child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                // Exited, or cannot tell: either way tokio's orphan reaper finishes the job.
                Ok(Some(_)) | Err(_) => return,
            }
        }
    }
}

/// The last lines of a log file, for error messages; never fails (a missing log is itself worth saying).
pub fn log_tail(log_path: &Path) -> String {
    match std::fs::read(log_path) {
        Ok(contents) => {
            let text = String::from_utf8_lossy(&contents);
            let lines: Vec<&str> = text.lines().collect();
            let tail_start = lines.len().saturating_sub(LOG_LINES_IN_ERRORS);
            // A burst of warnings can push the one error that explains a failure out of the tail.
            let earlier_errors: Vec<&str> = lines[..tail_start].iter().copied().filter(|line| line.contains(" ERROR ")).take(LOG_LINES_IN_ERRORS).collect();
            let tail = lines[tail_start..].join("\n");
            match earlier_errors.is_empty() {
                true => tail,
                false => format!("(errors before the tail:)\n{}\n(the tail:)\n{tail}", earlier_errors.join("\n")),
            }
        }
        Err(error) => format!("(could not read the log: {error})"),
    }
}

/// Creates the data directory and returns it absolute, because the server runs with its own view of paths.
pub(crate) fn prepare_data_dir(data_dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("failed to create data directory {}", data_dir.display()))?;
    std::path::absolute(data_dir)
        .with_context(|| format!("failed to make {} absolute", data_dir.display()))
}
