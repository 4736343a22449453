//! The bounded fuzz run of `cargo xtask test`: every cargo-fuzz target for a few seconds from the committed corpus.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context;

use crate::cargo_command;

/// Each target's time per run; long runs are by hand (see fuzz/README.md).
const DEFAULT_SECONDS_PER_TARGET: u64 = 15;

/// Installs cargo-fuzz when missing, builds every target once, then fuzzes each; true when no target found a failure.
pub fn run_bounded(workspace_root: &Path) -> anyhow::Result<bool> {
    ensure_cargo_fuzz()?;
    let fuzz_dir = workspace_root.join("fuzz");
    let seconds: u64 = match std::env::var("NATTER_FUZZ_SECONDS") {
        Ok(value) => value.parse().context("NATTER_FUZZ_SECONDS must be whole seconds")?,
        Err(_) => DEFAULT_SECONDS_PER_TARGET,
    };
    let build = fuzz_command(&fuzz_dir).arg("build").status().context("failed to run `cargo fuzz build`")?;
    if !build.success() {
        eprintln!("xtask fuzz: `cargo fuzz build` failed with {build}");
        return Ok(false);
    }
    let listing = fuzz_command(&fuzz_dir).arg("list").output().context("failed to run `cargo fuzz list`")?;
    let targets: Vec<String> = String::from_utf8_lossy(&listing.stdout).lines().map(str::trim).filter(|line| !line.is_empty()).map(str::to_owned).collect();
    anyhow::ensure!(!targets.is_empty(), "`cargo fuzz list` named no targets");
    let mut all_passed = true;
    for target in &targets {
        // New inputs go to a scratch corpus under target/; the committed one is only read.
        let scratch = workspace_root.join("target").join("fuzz-corpus").join(target);
        std::fs::create_dir_all(&scratch).with_context(|| format!("failed to create {}", scratch.display()))?;
        let committed = fuzz_dir.join("corpus").join(target);
        eprintln!("xtask fuzz: {target} for {seconds} s");
        let status = fuzz_command(&fuzz_dir)
            .args(["run", target])
            .arg(&scratch)
            .arg(&committed)
            .args(["--", &format!("-max_total_time={seconds}"), "-max_len=4096", "-print_final_stats=1"])
            .status()
            .with_context(|| format!("failed to run `cargo fuzz run {target}`"))?;
        if !status.success() {
            eprintln!("xtask fuzz: {target} FAILED ({status}); the input is under {}", fuzz_dir.join("artifacts").join(target).display());
            all_passed = false;
        }
    }
    Ok(all_passed)
}

/// cargo-fuzz passes the sanitizer and coverage flags only nightly accepts; this machine has one
/// stable toolchain and cannot fetch another, so the fuzz build alone is allowed nightly flags.
fn fuzz_command(fuzz_dir: &Path) -> Command {
    let mut command = cargo_command();
    command.arg("fuzz").current_dir(fuzz_dir).env("RUSTC_BOOTSTRAP", "1");
    if std::env::var_os("CI").is_some() {
        // As for the test build: a fresh clone builds once, so incremental state would only take disk.
        command.env("CARGO_INCREMENTAL", "0");
    }
    command
}

fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let installed = cargo_command().args(["fuzz", "--version"]).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|status| status.success());
    if installed {
        return Ok(());
    }
    eprintln!("xtask fuzz: installing cargo-fuzz");
    let status = cargo_command().args(["install", "cargo-fuzz", "--locked"]).status().context("failed to run `cargo install cargo-fuzz`")?;
    anyhow::ensure!(status.success(), "`cargo install cargo-fuzz` failed with {status}");
    Ok(())
}
