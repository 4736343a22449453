//! The `natter` configuration: an optional TOML file merged under the `NATTER_*` environment into one map that every role reads.
//!
//! The file's keys are the environment names without the prefix, lowercased (`jwt_secret`,
//! `listen`); the environment wins over the file. The roles' own `from_environment` loaders read
//! the merged map, so a setting means the same thing whichever way it was given.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

pub const ENVIRONMENT_PREFIX: &str = "NATTER_";
pub const CONFIG_FILE: &str = "NATTER_CONFIG";
pub const NATS_URL: &str = "NATTER_NATS_URL";
pub const REDIS_URL: &str = "NATTER_REDIS_URL";
pub const LISTEN: &str = "NATTER_LISTEN";
pub const DATA_DIR: &str = "NATTER_DATA_DIR";
pub const JWT_SECRET: &str = "NATTER_JWT_SECRET";
pub const DEV_MODE: &str = "NATTER_DEV_MODE";
pub const CLAMD_ADDRESS: &str = "NATTER_CLAMD_ADDRESS";
pub const MEDIA_SIGNATURES_DIR: &str = "NATTER_MEDIA_SIGNATURES_DIR";
/// A worker's `/metrics`, `/healthz` and `/readyz` listen address; unset, a worker serves none (the gateway always serves them on `NATTER_LISTEN`).
pub const METRICS_LISTEN: &str = "NATTER_METRICS_LISTEN";
/// `text` (the default) or `json`: one JSON object per log line, with the current span's fields (`request_id`).
pub const LOG_FORMAT: &str = "NATTER_LOG_FORMAT";

pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
pub const DEFAULT_LISTEN_ADDRESS: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = ".natter-data";

/// Every key a config file may set. Anything else is rejected so that a typo fails loudly instead of
/// silently leaving a default in place; a new setting in a role's loader must be added here too.
const KNOWN_FILE_KEYS: &[&str] = &[
    // natter itself
    "nats_url",
    "redis_url",
    "listen",
    "data_dir",
    "metrics_listen",
    "log_format",
    // gateway::GatewayConfig
    "jwt_secret",
    "dev_mode",
    "jwt_issuer",
    "jwt_audience",
    "max_body_bytes",
    "max_frame_bytes",
    "outbound_queue",
    "heartbeat_secs",
    "heartbeat_millis",
    // store::storage_settings_from_environment (gateway and fanout)
    "stream_replicas",
    "message_ttl_secs",
    "duplicate_window_secs",
    // fanout::FanoutConfig
    "fanout_ack_wait_secs",
    // gateway limits: rate limits (`<burst>/<per second>` or `off`), caps and the content policy
    "rate_send_per_user",
    "rate_send_per_address",
    "rate_connect_per_user",
    "rate_connect_per_address",
    "rate_upload_per_user",
    "rate_upload_per_address",
    "max_group_members",
    "max_conversations_per_user",
    "max_devices_per_user",
    "content_denylist",
    "spam_max_conversations",
    "spam_window_secs",
    // the role's NATS user (crate::nats_credentials)
    "nats_user",
    "nats_password",
    // TLS to NATS (crate::nats_tls)
    "nats_tls_ca",
    "nats_tls_cert",
    "nats_tls_key",
    // gateway::media_settings::MediaSettings
    "media_max_bytes",
    "media_upload_url_secs",
    "media_download_url_secs",
    "public_base_url",
    // media::MediaWorkerConfig (clamd_address also tells `natter run` not to start its own clamd)
    "clamd_address",
    "media_ack_wait_secs",
    "media_scan_timeout_secs",
    "media_max_image_side",
    "media_max_decode_bytes",
    // natter run's local clamd
    "media_signatures_dir",
    // push::PushWorkerConfig (a provider's key file also tells `natter run` to start a push worker)
    "push_ack_wait_secs",
    "push_max_attempts",
    "push_backoff_base_millis",
    "push_backoff_max_secs",
    "push_coalesce_millis",
    "push_content_free",
    "push_concurrency",
    "push_fcm_service_account_file",
    "push_fcm_base_url",
    "push_apns_key_file",
    "push_apns_key_id",
    "push_apns_team_id",
    "push_apns_topic",
    "push_apns_base_url",
    "push_vapid_key_file",
    "push_vapid_subject",
    "push_webpush_allow_http",
    // indexer::IndexerConfig
    "search_index_dir",
    "search_replica",
    "search_commit_millis",
    "search_commit_max_entries",
    "search_retention_check_millis",
    "search_lag_log_secs",
];

/// The merged `NATTER_*` settings. Roles get the whole map; the launcher reads its own keys through the accessors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatterConfig {
    environment: HashMap<String, String>,
}

impl NatterConfig {
    /// Reads the file named by `config_file` (the `--config` flag) or else `NATTER_CONFIG`, then lays the
    /// `NATTER_*` entries of `process_environment` over it, then validates.
    pub fn load(
        config_file: Option<&Path>,
        process_environment: &HashMap<String, String>,
    ) -> anyhow::Result<NatterConfig> {
        let config_file = config_file
            .map(Path::to_path_buf)
            .or_else(|| non_empty(process_environment, CONFIG_FILE).map(PathBuf::from));
        let file_text = match &config_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("failed to read config file {}", path.display()))?,
            ),
            None => None,
        };
        let config =
            Self::from_file_text_and_environment(file_text.as_deref(), process_environment)
                .with_context(|| match &config_file {
                    Some(path) => format!("invalid configuration (config file {})", path.display()),
                    None => "invalid configuration".to_owned(),
                })?;
        Ok(config)
    }

    /// The merge itself, apart from any file system access so tests can drive it with strings.
    pub fn from_file_text_and_environment(
        file_text: Option<&str>,
        process_environment: &HashMap<String, String>,
    ) -> anyhow::Result<NatterConfig> {
        let mut environment = match file_text {
            Some(text) => settings_from_file(text)?,
            None => HashMap::new(),
        };
        for (name, value) in process_environment {
            // Empty means unset for every role loader, so an empty variable must not hide the file's value.
            if name.starts_with(ENVIRONMENT_PREFIX) && !value.is_empty() {
                environment.insert(name.clone(), value.clone());
            }
        }
        let config = NatterConfig { environment };
        config.validate()?;
        Ok(config)
    }

    /// Checks the launcher's own keys; each role validates its own when it reads the map.
    pub fn validate(&self) -> anyhow::Result<()> {
        self.nats_server_addresses()?;
        let listen = self.listen_address();
        let port_is_valid = listen
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_is_valid {
            bail!("{LISTEN} must be host:port, such as 127.0.0.1:8080, not {listen:?}");
        }
        self.log_format_is_json()?;
        Ok(())
    }

    /// The map every role's `from_environment` reads.
    pub fn environment(&self) -> &HashMap<String, String> {
        &self.environment
    }

    /// A setting's value; empty counts as unset, as in the role loaders.
    pub fn get(&self, name: &str) -> Option<&str> {
        non_empty(&self.environment, name)
    }

    /// Fills in a setting the launcher decided (a local server's URL, the dev secret) unless one was configured.
    pub fn set_if_unset(&mut self, name: &str, value: impl Into<String>) {
        if self.get(name).is_none() {
            self.environment.insert(name.to_owned(), value.into());
        }
    }

    /// `NATTER_NATS_URL`, which may list several servers of one cluster, comma-separated.
    pub fn nats_server_addresses(&self) -> anyhow::Result<Vec<async_nats::ServerAddr>> {
        let urls = self.nats_urls();
        let addresses = urls
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(|url| {
                url.parse()
                    .with_context(|| format!("{NATS_URL} has an invalid server address {url:?}"))
            })
            .collect::<anyhow::Result<Vec<async_nats::ServerAddr>>>()?;
        if addresses.is_empty() {
            bail!("{NATS_URL} names no server: {urls:?}");
        }
        Ok(addresses)
    }

    pub fn nats_urls(&self) -> &str {
        self.get(NATS_URL).unwrap_or(DEFAULT_NATS_URL)
    }

    pub fn listen_address(&self) -> &str {
        self.get(LISTEN).unwrap_or(DEFAULT_LISTEN_ADDRESS)
    }

    pub fn metrics_listen_address(&self) -> Option<&str> {
        self.get(METRICS_LISTEN)
    }

    pub fn log_format_is_json(&self) -> anyhow::Result<bool> {
        match self.get(LOG_FORMAT) {
            None | Some("text") => Ok(false),
            Some("json") => Ok(true),
            Some(other) => bail!("{LOG_FORMAT} must be text or json, not {other:?}"),
        }
    }

    /// Where `natter run` keeps the local servers' data and the dev secret; relative to the working directory.
    pub fn data_dir(&self) -> PathBuf {
        PathBuf::from(self.get(DATA_DIR).unwrap_or(DEFAULT_DATA_DIR))
    }
}

/// The `NATTER_*` variables of this process. A non-UTF-8 value is an error rather than silently ignored.
pub fn process_environment() -> anyhow::Result<HashMap<String, String>> {
    let mut environment = HashMap::new();
    for (name, value) in std::env::vars_os() {
        let Some(name) = name
            .to_str()
            .filter(|name| name.starts_with(ENVIRONMENT_PREFIX))
        else {
            continue;
        };
        let value = value
            .into_string()
            .map_err(|_| anyhow::anyhow!("environment variable {name} is not valid UTF-8"))?;
        environment.insert(name.to_owned(), value);
    }
    Ok(environment)
}

fn non_empty<'a>(environment: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    environment
        .get(name)
        .map(String::as_str)
        .filter(|value| !value.is_empty())
}

/// Turns `listen = "0.0.0.0:8080"` into `NATTER_LISTEN=0.0.0.0:8080`; numbers and booleans become their text.
fn settings_from_file(file_text: &str) -> anyhow::Result<HashMap<String, String>> {
    let table: toml::Table = file_text.parse().context("config file is not valid TOML")?;
    let mut settings = HashMap::new();
    for (key, value) in table {
        if !KNOWN_FILE_KEYS.contains(&key.as_str()) {
            bail!(
                "unknown config key {key:?}; known keys: {}",
                KNOWN_FILE_KEYS.join(", ")
            );
        }
        let text = match value {
            toml::Value::String(text) => text,
            toml::Value::Integer(number) => number.to_string(),
            toml::Value::Boolean(flag) => flag.to_string(),
            other => bail!(
                "config key {key:?} must be a string, integer or boolean, not a {}",
                other.type_str()
            ),
        };
        settings.insert(
            format!("{ENVIRONMENT_PREFIX}{}", key.to_ascii_uppercase()),
            text,
        );
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `expected` is the merged map as `NAME=value` lines (sorted), or `Err(fragment of the error chain)`.
    fn check(
        file_text: Option<&str>,
        process_environment: &[(&str, &str)],
        expected: Result<&[&str], &str>,
    ) {
        let process_environment: HashMap<String, String> = process_environment
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        let outcome = NatterConfig::from_file_text_and_environment(file_text, &process_environment);
        match (outcome, expected) {
            (Ok(config), Ok(expected_lines)) => {
                let mut lines: Vec<String> = config
                    .environment()
                    .iter()
                    .map(|(name, value)| format!("{name}={value}"))
                    .collect();
                lines.sort();
                assert_eq!(
                    lines, expected_lines,
                    "file {file_text:?}, environment {process_environment:?}"
                );
            }
            (Err(error), Err(fragment)) => {
                let message = format!("{error:#}");
                assert!(
                    message.contains(fragment),
                    "expected an error containing {fragment:?}, got {message:?}"
                );
            }
            (outcome, expected) => {
                panic!("file {file_text:?}: expected {expected:?}, got {outcome:?}")
            }
        }
    }

    #[test]
    fn environment_wins_over_the_file() {
        check(None, &[], Ok(&[]));
        check(
            Some(
                "listen = \"0.0.0.0:9000\"\njwt_secret = \"from-file\"\nstream_replicas = 3\ndev_mode = true\n",
            ),
            &[
                ("NATTER_JWT_SECRET", "from-environment"),
                ("PATH", "/usr/bin"),
            ],
            Ok(&[
                "NATTER_DEV_MODE=true",
                "NATTER_JWT_SECRET=from-environment",
                "NATTER_LISTEN=0.0.0.0:9000",
                "NATTER_STREAM_REPLICAS=3",
            ]),
        );
        // An empty variable is unset for the roles, so it must not blank out the file's value.
        check(
            Some("listen = \"0.0.0.0:9000\""),
            &[("NATTER_LISTEN", "")],
            Ok(&["NATTER_LISTEN=0.0.0.0:9000"]),
        );
        check(
            None,
            &[("NATTER_SOMETHING_NEW", "1")],
            Ok(&["NATTER_SOMETHING_NEW=1"]),
        );
    }

    #[test]
    fn file_mistakes_are_errors() {
        check(
            Some("jwt_secrte = \"x\""),
            &[],
            Err("unknown config key \"jwt_secrte\""),
        );
        check(
            Some("JWT_SECRET = \"x\""),
            &[],
            Err("unknown config key \"JWT_SECRET\""),
        );
        check(
            Some("[gateway]\nlisten = \"x\""),
            &[],
            Err("unknown config key \"gateway\""),
        );
        check(
            Some("listen = [\"a\"]"),
            &[],
            Err("must be a string, integer or boolean, not a array"),
        );
        check(Some("listen = "), &[], Err("not valid TOML"));
    }

    #[test]
    fn launcher_keys_are_validated() {
        check(
            None,
            &[("NATTER_LISTEN", "8080")],
            Err("NATTER_LISTEN must be host:port"),
        );
        check(
            None,
            &[("NATTER_LISTEN", "127.0.0.1:http")],
            Err("NATTER_LISTEN must be host:port"),
        );
        check(
            None,
            &[("NATTER_NATS_URL", " , ")],
            Err("NATTER_NATS_URL names no server"),
        );
        check(
            None,
            &[("NATTER_LOG_FORMAT", "yaml")],
            Err("NATTER_LOG_FORMAT must be text or json"),
        );
        check(
            Some("log_format = \"json\"\nmetrics_listen = \"127.0.0.1:9100\""),
            &[],
            Ok(&["NATTER_LOG_FORMAT=json", "NATTER_METRICS_LISTEN=127.0.0.1:9100"]),
        );
        check(
            None,
            &[("NATTER_NATS_URL", "nats://a:4222,nats://b:4222")],
            Ok(&["NATTER_NATS_URL=nats://a:4222,nats://b:4222"]),
        );
    }

    #[test]
    fn several_nats_servers_are_parsed() {
        let environment = HashMap::from([(
            NATS_URL.to_owned(),
            "nats://a:4222, nats://b:4223".to_owned(),
        )]);
        let config = NatterConfig::from_file_text_and_environment(None, &environment).unwrap();
        assert_eq!(config.nats_server_addresses().unwrap().len(), 2);
        let defaults = NatterConfig::from_file_text_and_environment(None, &HashMap::new()).unwrap();
        assert_eq!(defaults.nats_urls(), DEFAULT_NATS_URL);
        assert_eq!(defaults.listen_address(), DEFAULT_LISTEN_ADDRESS);
        assert_eq!(defaults.data_dir(), PathBuf::from(DEFAULT_DATA_DIR));
    }
}
