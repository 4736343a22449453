//! One Natter role as a real child process for chaos tests: started with its environment, SIGKILLed or SIGTERMed, and restarted on the same port.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// A gateway closes its sockets and flushes within a few seconds of SIGTERM; longer means it hangs.
const TERMINATE_GRACE_PERIOD: Duration = Duration::from_secs(15);

/// A role the process system runs; the name is the `role_process` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleName {
    Gateway,
    Fanout,
    Indexer,
    Media,
    Push,
}

impl RoleName {
    pub fn as_str(self) -> &'static str {
        match self {
            RoleName::Gateway => "gateway",
            RoleName::Fanout => "fanout",
            RoleName::Indexer => "indexer",
            RoleName::Media => "media",
            RoleName::Push => "push",
        }
    }
}

/// A role's process and what it takes to start it again exactly as before.
pub struct RoleProcess {
    pub role: RoleName,
    binary: PathBuf,
    environment: Vec<(String, String)>,
    log_path: PathBuf,
    child: Option<Child>,
    /// Where a gateway listens; the same across restarts, so clients can come back to it.
    pub listen: Option<SocketAddr>,
}

impl RoleProcess {
    /// Starts `binary role` with `environment`, appending its output to `log_path`.
    pub fn start(
        binary: &Path,
        role: RoleName,
        environment: Vec<(String, String)>,
        log_path: PathBuf,
        listen: Option<SocketAddr>,
    ) -> anyhow::Result<RoleProcess> {
        let mut process = RoleProcess {
            role,
            binary: binary.to_path_buf(),
            environment,
            log_path,
            child: None,
            listen,
        };
        process.spawn()?;
        Ok(process)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("failed to open {}", self.log_path.display()))?;
        writeln!(
            log,
            "==== testkit: starting {} {}",
            self.binary.display(),
            self.role.as_str()
        )?;
        let mut command = Command::new(&self.binary);
        command
            .arg(self.role.as_str())
            .envs(self.environment.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        if let Some(listen) = self.listen {
            command.env("NATTER_LISTEN", listen.to_string());
        }
        self.child = Some(command.spawn().with_context(|| {
            format!(
                "failed to start {} {}",
                self.binary.display(),
                self.role.as_str()
            )
        })?);
        Ok(())
    }

    /// SIGKILL, as a crash would, and reap the process.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // An error means it already exited and was reaped: nothing left to kill.
            let _ = child.kill().await;
        }
    }

    /// SIGTERM, as an orchestrator's rolling restart would, and wait for a clean exit.
    pub async fn terminate(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        match tokio::time::timeout(TERMINATE_GRACE_PERIOD, child.wait()).await {
            Ok(status) => {
                let status = status.context("failed to wait for the role")?;
                anyhow::ensure!(
                    status.success(),
                    "{} exited with {status} after SIGTERM; log:\n{}",
                    self.role.as_str(),
                    self.log_tail()
                );
                Ok(())
            }
            Err(_) => {
                let _ = child.kill().await;
                anyhow::bail!(
                    "{} ignored SIGTERM for {TERMINATE_GRACE_PERIOD:?}; log:\n{}",
                    self.role.as_str(),
                    self.log_tail()
                )
            }
        }
    }

    /// Starts the role again with the same environment and address; it must have been killed or terminated.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.child.is_none(),
            "{} is still running",
            self.role.as_str()
        );
        self.spawn()
    }

    /// Fails, quoting the log, if the process has exited on its own.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.as_mut() else {
            anyhow::bail!("{} was stopped by the test", self.role.as_str())
        };
        match child.try_wait()? {
            None => Ok(()),
            Some(status) => anyhow::bail!(
                "{} exited on its own with {status}; log:\n{}",
                self.role.as_str(),
                self.log_tail()
            ),
        }
    }

    pub fn log_tail(&self) -> String {
        devservers::log_tail(&self.log_path)
    }
}
