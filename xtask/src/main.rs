//! `cargo xtask <setup|test|run|nats-users>`: installs the local tools, runs the test suite, runs the all-in-one launcher, writes the NATS users file.

mod fuzz;
mod setup;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

/// Tells devservers (and so every test) which nats-server to run.
const NATS_SERVER_BIN_ENV: &str = "NATTER_NATS_SERVER_BIN";

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Natter's development chores"
)]
struct Arguments {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the pinned nats-server and schemathesis, redis-server, clamav-daemon and cargo-nextest if missing.
    Setup,
    /// Set up, then run every test in the workspace with nextest and every fuzz target briefly; extra arguments go to nextest.
    Test {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        nextest_arguments: Vec<String>,
    },
    /// Set up, build the release launcher and run `natter run`; extra arguments go to the launcher.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        launcher_arguments: Vec<String>,
    },
    /// Write nats-config/users.conf (one NATS user per role) from subjects::permissions.
    NatsUsers,
}

fn main() -> anyhow::Result<ExitCode> {
    let arguments = Arguments::parse();
    let workspace_root = workspace_root();
    match arguments.task {
        Task::Setup => {
            setup::run(&workspace_root)?;
            Ok(ExitCode::SUCCESS)
        }
        Task::Test { nextest_arguments } => run_tests(&workspace_root, &nextest_arguments),
        Task::Run { launcher_arguments } => run_launcher(&workspace_root, &launcher_arguments),
        Task::NatsUsers => {
            let path = workspace_root.join("nats-config/users.conf");
            std::fs::write(&path, subjects::users_conf()).with_context(|| format!("failed to write {}", path.display()))?;
            println!("wrote {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run_tests(workspace_root: &Path, nextest_arguments: &[String]) -> anyhow::Result<ExitCode> {
    setup::run(workspace_root)?;
    let status = cargo_command()
        .current_dir(workspace_root)
        .args(["nextest", "run", "--workspace", "--no-fail-fast"])
        .args(nextest_arguments)
        .env(NATS_SERVER_BIN_ENV, setup::nats_server_path(workspace_root))
        // A fresh CI clone builds once: incremental state would only take disk (a CI run once ran out of it).
        .env("CARGO_INCREMENTAL", if std::env::var_os("CI").is_some() { "0" } else { "1" })
        .status()
        .context("failed to run `cargo nextest run`")?;
    // Hand nextest's own exit code on (it distinguishes failing tests from build errors); a signal means failure.
    let code = status.code().unwrap_or(1);
    // Only for a whole-suite run: arguments select some tests, and the fuzzers are not among them.
    if nextest_arguments.is_empty() && std::env::var_os("CI").is_some() {
        // A CI clone is thrown away afterwards: free the test build's disk before the fuzz build needs its own.
        let _ = std::fs::remove_dir_all(target_dir(workspace_root).join("debug"));
    }
    if nextest_arguments.is_empty() && !fuzz::run_bounded(workspace_root)? && code == 0 {
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

fn run_launcher(workspace_root: &Path, launcher_arguments: &[String]) -> anyhow::Result<ExitCode> {
    setup::run(workspace_root)?;
    let build_status = cargo_command()
        .current_dir(workspace_root)
        .args(["build", "--release", "-p", "natter"])
        .status()
        .context("failed to run `cargo build --release -p natter`")?;
    if !build_status.success() {
        bail!("`cargo build --release -p natter` failed with {build_status}");
    }
    let launcher = target_dir(workspace_root).join("release").join("natter");
    // exec replaces this process, so Ctrl-C reaches the launcher directly and it can shut down in order.
    let exec_error = Command::new(&launcher)
        .current_dir(workspace_root)
        .arg("run")
        .args(launcher_arguments)
        .env(NATS_SERVER_BIN_ENV, setup::nats_server_path(workspace_root))
        .exec();
    Err(exec_error).with_context(|| format!("failed to exec {}", launcher.display()))
}

/// The cargo that invoked us (cargo sets `CARGO` for `cargo run`), so a toolchain override carries through.
pub(crate) fn cargo_command() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one directory below the workspace root")
        .to_path_buf()
}

fn target_dir(workspace_root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        // Cargo reads a relative CARGO_TARGET_DIR against the directory it was started in, as does `absolute`.
        Some(target_dir) => {
            std::path::absolute(&target_dir).unwrap_or_else(|_| workspace_root.join(target_dir))
        }
        None => workspace_root.join("target"),
    }
}
