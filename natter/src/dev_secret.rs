//! The development JWT secret kept in the data directory, so that restarts of `natter run` and `natter token` sign alike.

use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rand::RngCore;

const DEV_SECRET_FILE_NAME: &str = "dev-jwt-secret";

/// Random bytes in a fresh secret; hex-encoded they are 96 characters, well over the gateway's 32-byte minimum.
const DEV_SECRET_RANDOM_BYTES: usize = 48;

/// The gateway refuses shorter HS256 secrets; a file shorter than this was damaged or hand-edited.
const MINIMUM_SECRET_LENGTH: usize = 32;

pub fn dev_secret_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DEV_SECRET_FILE_NAME)
}

/// Returns the secret in `<data_dir>/dev-jwt-secret`, creating it (mode 0600) on first use.
pub fn load_or_create_dev_secret(data_dir: &Path) -> anyhow::Result<String> {
    let path = dev_secret_path(data_dir);
    // `create_new` makes creation atomic: two launchers on one data dir cannot end up with different secrets.
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(file) => file,
        Err(error) if error.kind() == ErrorKind::AlreadyExists => {
            return read_dev_secret(data_dir)?
                .with_context(|| format!("{} vanished while being read", path.display()));
        }
        Err(error) => {
            return Err(error).with_context(|| format!("failed to create {}", path.display()));
        }
    };
    let mut random_bytes = [0u8; DEV_SECRET_RANDOM_BYTES];
    rand::rng().fill_bytes(&mut random_bytes);
    let secret: String = random_bytes
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    writeln!(file, "{secret}").with_context(|| format!("failed to write {}", path.display()))?;
    file.sync_all()
        .with_context(|| format!("failed to sync {}", path.display()))?;
    tracing::info!(path = %path.display(), "created a development JWT secret");
    Ok(secret)
}

/// Reads the dev secret if the data directory has one; never creates it.
pub fn read_dev_secret(data_dir: &Path) -> anyhow::Result<Option<String>> {
    let path = dev_secret_path(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(error).with_context(|| format!("failed to read {}", path.display()));
        }
    };
    let secret = text.trim();
    if secret.len() < MINIMUM_SECRET_LENGTH {
        bail!(
            "{} holds a secret shorter than {MINIMUM_SECRET_LENGTH} characters; delete it and `natter run` makes a new one",
            path.display()
        );
    }
    if let Ok(metadata) = std::fs::metadata(&path)
        && metadata.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "the dev JWT secret is readable by other users; chmod 600 it");
    }
    Ok(Some(secret.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reused_with_owner_only_permissions() {
        let temp_dir = tempfile::tempdir().unwrap();
        let data_dir = temp_dir.path();
        assert_eq!(read_dev_secret(data_dir).unwrap(), None);
        let created = load_or_create_dev_secret(data_dir).unwrap();
        assert_eq!(created.len(), 2 * DEV_SECRET_RANDOM_BYTES);
        assert_eq!(load_or_create_dev_secret(data_dir).unwrap(), created);
        assert_eq!(read_dev_secret(data_dir).unwrap(), Some(created));
        let mode = std::fs::metadata(dev_secret_path(data_dir))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
