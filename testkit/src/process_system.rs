//! A whole Natter whose roles are real processes (gateways, fanouts, an indexer) beside a real nats-server and redis-server, so chaos tests can kill any of them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use subjects::Id;
use tempfile::TempDir;

use crate::role_process::{RoleName, RoleProcess};
use crate::system::media_signature_dir;
use crate::{Api, ClamdServer, NatsServer, RedisServer, wait_until};

const JWT_SECRET: &str = "natter-chaos-secret-that-is-long-enough-for-hs256";

/// How long a role gets from (re)start to ready on a busy 2-core machine.
const READY_DEADLINE: Duration = Duration::from_secs(60);

pub struct ProcessSystemBuilder {
    binary: PathBuf,
    gateways: usize,
    fanouts: usize,
    indexer: bool,
    media: bool,
    push: Option<Vec<(String, String)>>,
    nats_urls: Option<String>,
    environment: Vec<(String, String)>,
}

impl ProcessSystemBuilder {
    pub fn gateways(mut self, count: usize) -> Self {
        self.gateways = count;
        self
    }
    pub fn fanouts(mut self, count: usize) -> Self {
        self.fanouts = count;
        self
    }
    /// Also a search indexer process (its index in the system's temp dir).
    pub fn with_indexer(mut self) -> Self {
        self.indexer = true;
        self
    }
    /// Also clamd (with the repo's signatures) and a media worker process.
    pub fn with_media(mut self) -> Self {
        self.media = true;
        self
    }
    /// Also a push worker process, configured by `environment` (`NATTER_PUSH_*`: providers and their base URLs).
    pub fn with_push(mut self, environment: Vec<(String, String)>) -> Self {
        self.push = Some(environment);
        self
    }
    /// Use these NATS servers (comma-separated, e.g. a cluster's) instead of starting one.
    pub fn nats_urls(mut self, urls: impl Into<String>) -> Self {
        self.nats_urls = Some(urls.into());
        self
    }
    /// An extra `NATTER_*` variable for every role.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.environment.push((key.into(), value.into()));
        self
    }

    pub async fn start(self) -> anyhow::Result<ProcessSystem> {
        crate::init_tracing();
        let dir = tempfile::tempdir().context("failed to create the system's temp dir")?;
        let nats = match self.nats_urls {
            Some(_) => None,
            None => Some(NatsServer::start(&dir.path().join("nats")).await?),
        };
        let nats_urls = self
            .nats_urls
            .unwrap_or_else(|| nats.as_ref().expect("started above").client_url());
        let redis = RedisServer::start(&dir.path().join("redis")).await?;
        let clamd = match self.media {
            true => Some(ClamdServer::start(&media_signature_dir(), &dir.path().join("clamd")).await?),
            false => None,
        };
        let mut environment = vec![
            ("NATTER_NATS_URL".to_owned(), nats_urls.clone()),
            ("NATTER_REDIS_URL".to_owned(), redis.url()),
            ("NATTER_JWT_SECRET".to_owned(), JWT_SECRET.to_owned()),
            ("NATTER_DEV_MODE".to_owned(), "0".to_owned()),
            // Chaos is about faults, not abuse: every client shares 127.0.0.1 and reconnects in bursts.
            (
                "NATTER_RATE_SEND_PER_USER".to_owned(),
                "1000000/1000000".to_owned(),
            ),
            ("NATTER_RATE_SEND_PER_ADDRESS".to_owned(), "off".to_owned()),
            (
                "NATTER_RATE_CONNECT_PER_USER".to_owned(),
                "1000000/1000000".to_owned(),
            ),
            (
                "NATTER_RATE_CONNECT_PER_ADDRESS".to_owned(),
                "off".to_owned(),
            ),
            // Short, so a killed fanout's unacked messages come back within the run.
            ("NATTER_FANOUT_ACK_WAIT_SECS".to_owned(), "2".to_owned()),
            (
                "NATTER_SEARCH_INDEX_DIR".to_owned(),
                dir.path().join("index").display().to_string(),
            ),
            // Short, so a killed media or push worker's job comes back within the run.
            ("NATTER_MEDIA_ACK_WAIT_SECS".to_owned(), "3".to_owned()),
            ("NATTER_PUSH_ACK_WAIT_SECS".to_owned(), "3".to_owned()),
            ("RUST_LOG".to_owned(), "warn".to_owned()),
        ];
        if let Some(clamd) = &clamd {
            environment.push(("NATTER_CLAMD_ADDRESS".to_owned(), clamd.address()));
        }
        environment.extend(self.environment);
        let mut system = ProcessSystem {
            binary: self.binary,
            environment,
            nats_urls,
            nats,
            redis,
            clamd,
            gateways: Vec::new(),
            fanouts: Vec::new(),
            indexer: None,
            media: None,
            push: None,
            authenticator: gateway::Authenticator::new(
                &gateway::GatewayConfig::for_development(JWT_SECRET).jwt,
            ),
            http: reqwest::Client::new(),
            dir,
        };
        // One at a time: the first creates the streams and buckets, the others find them (on a cold R3
        // cluster, concurrent creations can outlast a JetStream request's timeout).
        for number in 0..self.gateways {
            let listen = free_address()?;
            let process = system.start_role(RoleName::Gateway, number, Some(listen), Vec::new())?;
            system.gateways.push(process);
            system.wait_gateway_ready(number).await?;
        }
        for number in 0..self.fanouts {
            let process = system.start_role(RoleName::Fanout, number, None, Vec::new())?;
            system.fanouts.push(process);
        }
        if self.indexer {
            system.indexer = Some(system.start_role(RoleName::Indexer, 0, None, Vec::new())?);
        }
        if system.clamd.is_some() {
            system.media = Some(system.start_role(RoleName::Media, 0, None, Vec::new())?);
        }
        if let Some(push_environment) = self.push {
            system.push = Some(system.start_role(RoleName::Push, 0, None, push_environment)?);
        }
        Ok(system)
    }
}

pub struct ProcessSystem {
    binary: PathBuf,
    environment: Vec<(String, String)>,
    nats_urls: String,
    /// None when the system runs against servers the test started (a cluster).
    pub nats: Option<NatsServer>,
    pub redis: RedisServer,
    clamd: Option<ClamdServer>,
    pub gateways: Vec<RoleProcess>,
    pub fanouts: Vec<RoleProcess>,
    pub indexer: Option<RoleProcess>,
    pub media: Option<RoleProcess>,
    pub push: Option<RoleProcess>,
    authenticator: gateway::Authenticator,
    http: reqwest::Client,
    dir: TempDir,
}

impl ProcessSystem {
    /// `binary` is the e2e crate's `role_process` (`env!("CARGO_BIN_EXE_role_process")`); two gateways, one fanout.
    pub fn builder(binary: impl AsRef<Path>) -> ProcessSystemBuilder {
        ProcessSystemBuilder {
            binary: binary.as_ref().to_path_buf(),
            gateways: 2,
            fanouts: 1,
            indexer: false,
            media: false,
            push: None,
            nats_urls: None,
            environment: Vec::new(),
        }
    }

    fn start_role(
        &self,
        role: RoleName,
        number: usize,
        listen: Option<SocketAddr>,
        extra_environment: Vec<(String, String)>,
    ) -> anyhow::Result<RoleProcess> {
        // NATTER_TEST_LOG_DIR keeps the roles' logs after the test, for reading a failure at leisure.
        let log_dir = std::env::var_os("NATTER_TEST_LOG_DIR").map_or_else(|| self.dir.path().to_path_buf(), PathBuf::from);
        let log_path = log_dir.join(format!("{}-{number}.log", role.as_str()));
        let mut environment = self.environment.clone();
        environment.push((
            "NATTER_DATA_DIR".to_owned(),
            self.dir
                .path()
                .join(format!("{}-{number}", role.as_str()))
                .display()
                .to_string(),
        ));
        environment.extend(extra_environment);
        RoleProcess::start(&self.binary, role, environment, log_path, listen)
    }

    /// Waits until gateway `number` answers `/readyz` (NATS and Redis reachable).
    pub async fn wait_gateway_ready(&mut self, number: usize) -> anyhow::Result<()> {
        let url = format!("{}/readyz", self.http_url(number));
        let http = self.http.clone();
        let ready = wait_until(
            &format!("gateway {number} is ready"),
            READY_DEADLINE,
            || {
                let request = http.get(&url).timeout(Duration::from_secs(2));
                async move {
                    request
                        .send()
                        .await
                        .is_ok_and(|response| response.status().is_success())
                }
            },
        )
        .await;
        ready
            .map_err(|error| anyhow::anyhow!("{error}; log:\n{}", self.gateways[number].log_tail()))
    }

    /// What the roles were given as `NATTER_NATS_URL`.
    pub fn nats_urls(&self) -> &str {
        &self.nats_urls
    }

    pub fn http_url(&self, gateway: usize) -> String {
        format!(
            "http://{}",
            self.gateways[gateway].listen.expect("gateways listen")
        )
    }

    pub fn ws_url(&self, gateway: usize) -> String {
        format!(
            "ws://{}/v1/ws",
            self.gateways[gateway].listen.expect("gateways listen")
        )
    }

    /// Every gateway's WebSocket URL, in gateway order.
    pub fn ws_urls(&self) -> Vec<String> {
        (0..self.gateways.len())
            .map(|number| self.ws_url(number))
            .collect()
    }

    pub fn token(&self, user: &str) -> String {
        self.authenticator
            .mint(&Id::parse(user).expect("test user ids are valid"))
    }

    pub fn api(&self, gateway: usize, user: &str) -> Api {
        Api::new(self.http.clone(), self.http_url(gateway), self.token(user))
    }

    /// The end of every role's log, for a failing test to show.
    pub fn log_tails(&self) -> String {
        let roles = self.gateways.iter().chain(&self.fanouts).chain(&self.indexer).chain(&self.media).chain(&self.push);
        roles.map(|role| format!("---- {} log:\n{}\n", role.role.as_str(), role.log_tail())).collect()
    }

    /// Fails, quoting its log, if any role has exited without the test stopping it.
    pub fn ensure_all_running(&mut self) -> anyhow::Result<()> {
        let mut roles = self
            .gateways
            .iter_mut()
            .chain(self.fanouts.iter_mut())
            .chain(self.indexer.iter_mut())
            .chain(self.media.iter_mut())
            .chain(self.push.iter_mut());
        roles.try_for_each(RoleProcess::ensure_running)
    }
}

/// A port nobody listens on now; the gateway binds it (and binds it again after a restart).
fn free_address() -> anyhow::Result<SocketAddr> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").context("failed to find a free port")?;
    Ok(probe.local_addr()?)
}
