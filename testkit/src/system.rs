//! A whole Natter started for one test: a real nats-server and redis-server (and, when asked, clamd) on free ports, gateways and workers (search indexers included) in-process on port 0.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use fanout::FanoutConfig;
use gateway::GatewayConfig;
use indexer::IndexerConfig;
use media::MediaWorkerConfig;
use push::{PushMetrics, PushWorkerConfig};
use std::sync::Arc;
use subjects::permissions::Role;
use subjects::Id;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::test_nats::TestNats;
use crate::{Api, ClamdServer, NatsServer, RedisServer, WsClient};

const TEST_SECRET: &str = "natter-test-secret-that-is-long-enough-for-hs256";

/// A change applied to the config of every indexer a system starts.
type IndexerConfigChange = Arc<dyn Fn(&mut IndexerConfig) + Send + Sync>;

pub(crate) struct Running {
    pub(crate) address: Option<SocketAddr>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) task: Option<JoinHandle<anyhow::Result<()>>>,
}

pub struct SystemBuilder {
    gateways: usize,
    fanouts: usize,
    gateway_config: GatewayConfig,
    fanout_config: FanoutConfig,
    with_redis: bool,
    with_media: bool,
    media_config: MediaWorkerConfig,
    push_config: Option<PushWorkerConfig>,
    with_search: bool,
    indexer_config: Option<IndexerConfigChange>,
    role_users: bool,
    message_shards: u32,
    nats_cluster: bool,
}

impl SystemBuilder {
    /// nats-server with `nats-config/users.conf`: the provisioner makes the layout, and every role
    /// runs as its own user, opening it only, as a deployment with `NATTER_NATS_USER` does.
    pub fn with_role_users(mut self) -> Self {
        self.role_users = true;
        self
    }

    /// A 3-node NATS cluster from `nats-config/` instead of one server, every stream and bucket R3.
    pub fn on_nats_cluster(mut self) -> Self {
        self.nats_cluster = true;
        self
    }

    /// Log shards new conversations are spread over (`NATTER_MESSAGE_SHARDS`), for every role.
    pub fn message_shards(mut self, count: u32) -> Self {
        self.message_shards = count;
        self
    }

    pub fn gateways(mut self, count: usize) -> Self {
        self.gateways = count;
        self
    }
    pub fn fanouts(mut self, count: usize) -> Self {
        self.fanouts = count;
        self
    }
    pub fn gateway_config(mut self, change: impl FnOnce(&mut GatewayConfig)) -> Self {
        change(&mut self.gateway_config);
        self
    }
    pub fn fanout_config(mut self, change: impl FnOnce(&mut FanoutConfig)) -> Self {
        change(&mut self.fanout_config);
        self
    }
    /// The gateways' ping interval; a socket silent for twice this long is closed and its device goes offline.
    pub fn heartbeat(self, interval: Duration) -> Self {
        self.gateway_config(|config| config.heartbeat_interval = interval)
    }
    /// No redis-server: the gateways run without presence and limit typing locally.
    pub fn without_redis(mut self) -> Self {
        self.with_redis = false;
        self
    }

    /// Also start clamd (with the repo's signatures) and one media worker; off by default so other tests stay fast.
    pub fn with_media(mut self) -> Self {
        self.with_media = true;
        self
    }
    pub fn media_config(mut self, change: impl FnOnce(&mut MediaWorkerConfig)) -> Self {
        change(&mut self.media_config);
        self
    }

    /// Also start one push worker with this config (test defaults: short ack wait, window and backoff; no providers until set).
    pub fn with_push(mut self, change: impl FnOnce(&mut PushWorkerConfig)) -> Self {
        let mut config = PushWorkerConfig {
            ack_wait: Duration::from_secs(10),
            coalesce_window: Duration::from_millis(500),
            backoff_base: Duration::from_millis(100),
            ..PushWorkerConfig::default()
        };
        change(&mut config);
        self.push_config = Some(config);
        self
    }

    /// Also start one search indexer (its index in the system's temp dir); off by default so other tests stay fast.
    pub fn with_search(mut self) -> Self {
        self.with_search = true;
        self
    }

    /// Changes the config of every indexer this system starts (e.g. a short retention check).
    pub fn indexer_config(mut self, change: impl Fn(&mut IndexerConfig) + Send + Sync + 'static) -> Self {
        self.indexer_config = Some(Arc::new(change));
        self
    }

    pub async fn start(self) -> anyhow::Result<TestSystem> {
        crate::init_tracing();
        let store = tempfile::tempdir().context("failed to create a store dir")?;
        let nats = match (self.role_users, self.nats_cluster) {
            (true, false) => TestNats::Single(crate::role_users::start_nats_with_role_users(store.path()).await?),
            (false, false) => TestNats::Single(NatsServer::start(store.path()).await?),
            (false, true) => TestNats::Cluster(crate::NatsCluster::start(store.path()).await?),
            (true, true) => anyhow::bail!("role users are tested on one server; the cluster runs without users"),
        };
        let redis = match self.with_redis {
            true => Some(RedisServer::start(&store.path().join("redis")).await?),
            false => None,
        };
        let clamd = match self.with_media {
            true => Some(ClamdServer::start(&media_signature_dir(), &store.path().join("clamd")).await?),
            false => None,
        };
        let mut media_config = self.media_config;
        if let Some(clamd) = &clamd {
            media_config.clamd_address = clamd.address();
        }
        let mut gateway_config = self.gateway_config;
        gateway_config.redis_url = redis.as_ref().map(RedisServer::url);
        // The fanout reads presence from the same Redis to decide who gets a push.
        let mut fanout_config = self.fanout_config;
        fanout_config.redis_url = redis.as_ref().map(RedisServer::url);
        let mut push_config = self.push_config;
        for storage in [&mut gateway_config.storage, &mut fanout_config.storage, &mut media_config.storage].into_iter().chain(push_config.as_mut().map(|config| &mut config.storage)) {
            storage.message_shards = self.message_shards;
            if self.nats_cluster {
                storage.replicas = 3;
            }
        }
        if self.role_users {
            let mut settings = vec![&mut gateway_config.storage, &mut fanout_config.storage, &mut media_config.storage];
            settings.extend(push_config.as_mut().map(|config| &mut config.storage));
            crate::role_users::provision_then_open_only(&nats.server().client_url(), settings).await?;
        }
        let mut system = TestSystem {
            nats,
            redis,
            store,
            gateways: Vec::new(),
            fanouts: Vec::new(),
            clamd,
            media_workers: Vec::new(),
            media_config,
            gateway_config,
            fanout_config,
            http: reqwest::Client::new(),
            push_workers: Vec::new(),
            push_metrics: Arc::new(PushMetrics::default()),
            indexers: Vec::new(),
            indexer_config_change: self.indexer_config,
            role_users: self.role_users,
        };
        for _ in 0..self.gateways {
            system.add_gateway().await?;
        }
        for _ in 0..self.fanouts {
            system.add_fanout().await?;
        }
        if self.with_media {
            system.add_media_worker().await?;
        }
        if let Some(push_config) = push_config {
            system.add_push_worker(push_config).await?;
        }
        if self.with_search {
            system.add_indexer().await?;
        }
        Ok(system)
    }
}

pub struct TestSystem {
    pub nats: TestNats,
    /// Presence and typing limits; tests may kill and restart it.
    redis: Option<RedisServer>,
    pub(crate) store: TempDir,
    gateways: Vec<Running>,
    fanouts: Vec<Running>,
    clamd: Option<ClamdServer>,
    media_workers: Vec<Running>,
    media_config: MediaWorkerConfig,
    pub(crate) gateway_config: GatewayConfig,
    fanout_config: FanoutConfig,
    http: reqwest::Client,
    push_workers: Vec<Running>,
    /// Counters of every push worker this system started.
    pub push_metrics: Arc<PushMetrics>,
    pub(crate) indexers: Vec<Running>,
    pub(crate) indexer_config_change: Option<IndexerConfigChange>,
    pub(crate) role_users: bool,
}

impl TestSystem {
    /// One gateway and one fanout worker.
    pub async fn start() -> anyhow::Result<TestSystem> {
        TestSystem::builder().start().await
    }

    pub fn builder() -> SystemBuilder {
        let mut fanout_config = FanoutConfig::default();
        // Short, so a killed worker's messages come back quickly in tests.
        fanout_config.ack_wait = Duration::from_secs(2);
        // Short, so a killed media worker's job comes back quickly in tests.
        let media_config = MediaWorkerConfig { ack_wait: Duration::from_secs(3), scan_timeout: Duration::from_secs(2), ..MediaWorkerConfig::default() };
        SystemBuilder {
            gateways: 1,
            fanouts: 1,
            gateway_config: test_gateway_config(),
            fanout_config,
            with_redis: true,
            with_media: false,
            media_config,
            push_config: None,
            with_search: false,
            indexer_config: None,
            role_users: false,
            message_shards: 1,
            nats_cluster: false,
        }
    }

    /// The test's own connection; with role users there is no anonymous access, so it is the provisioner's.
    pub async fn connect_nats(&self) -> anyhow::Result<async_nats::Client> {
        self.connect_role(Role::Provisioner).await
    }

    /// The connection `role` runs on: its own NATS user with role users, else an anonymous one.
    pub async fn connect_role(&self, role: Role) -> anyhow::Result<async_nats::Client> {
        match self.role_users {
            true => crate::role_users::connect_as(&self.nats.server().client_url(), role).await,
            false => self.nats.connect().await,
        }
    }

    /// Starts another gateway; returns its index.
    pub async fn add_gateway(&mut self) -> anyhow::Result<usize> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let nats = self.connect_role(Role::Gateway).await?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(gateway::run(self.gateway_config.clone(), listener, nats, shutdown.clone()));
        self.gateways.push(Running { address: Some(address), shutdown, task: Some(task) });
        let index = self.gateways.len() - 1;
        let url = format!("{}/healthz", self.http_url(index));
        let http = self.http.clone();
        crate::wait_until("the gateway answers", Duration::from_secs(20), || {
            let http = http.clone();
            let url = url.clone();
            async move { http.get(&url).send().await.is_ok_and(|response| response.status().is_success()) }
        })
        .await?;
        Ok(index)
    }

    /// The shard count processes started from now on run with, as a rolling change of `NATTER_MESSAGE_SHARDS` does.
    pub fn set_message_shards(&mut self, count: u32) {
        for storage in [&mut self.gateway_config.storage, &mut self.fanout_config.storage, &mut self.media_config.storage] {
            storage.message_shards = count;
        }
    }

    /// Starts another fanout worker; returns its index. It is ready once its consumer exists.
    pub async fn add_fanout(&mut self) -> anyhow::Result<usize> {
        let nats = self.connect_role(Role::Fanout).await?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(fanout::run(self.fanout_config.clone(), nats, shutdown.clone()));
        self.fanouts.push(Running { address: None, shutdown, task: Some(task) });
        // The last shard's consumer is made last.
        let last_shard = subjects::Shard(self.fanout_config.storage.message_shards.max(1) - 1).message_stream();
        self.wait_for_consumer(Role::Fanout, &last_shard, subjects::FANOUT_CONSUMER).await?;
        Ok(self.fanouts.len() - 1)
    }

    /// A worker is ready once its durable consumer exists; asked on the worker's own user, which may read it.
    async fn wait_for_consumer(&self, role: Role, stream: &str, consumer: &'static str) -> anyhow::Result<()> {
        let jetstream = async_nats::jetstream::new(self.connect_role(role).await?);
        crate::wait_until(&format!("the {consumer} consumer exists"), Duration::from_secs(20), || {
            let jetstream = jetstream.clone();
            async move {
                match jetstream.get_stream(stream).await {
                    Ok(stream) => stream.consumer_info(consumer).await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await
    }

    /// Drops a fanout worker without letting it finish: its NATS connection closes with messages unacked, as after SIGKILL.
    pub fn kill_fanout(&mut self, index: usize) {
        if let Some(task) = self.fanouts[index].task.take() {
            task.abort();
        }
    }

    /// Starts another media worker with the system's media config; returns its index once its consumer exists.
    pub async fn add_media_worker(&mut self) -> anyhow::Result<usize> {
        self.add_media_worker_with(|_| {}).await
    }

    /// Starts a media worker with a changed config (e.g. a clamd that never answers, to be killed mid-scan).
    pub async fn add_media_worker_with(&mut self, change: impl FnOnce(&mut MediaWorkerConfig)) -> anyhow::Result<usize> {
        let mut config = self.media_config.clone();
        change(&mut config);
        let nats = self.connect_role(Role::Media).await?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(media::run(config, nats, shutdown.clone()));
        self.media_workers.push(Running { address: None, shutdown, task: Some(task) });
        self.wait_for_consumer(Role::Media, subjects::MEDIA_JOBS_STREAM, subjects::MEDIA_CONSUMER).await?;
        Ok(self.media_workers.len() - 1)
    }

    /// Starts a push worker counting into [`TestSystem::push_metrics`]; ready once its consumer exists.
    pub async fn add_push_worker(&mut self, config: PushWorkerConfig) -> anyhow::Result<usize> {
        let nats = self.connect_role(Role::Push).await?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(push::run_with_metrics(config, nats, shutdown.clone(), self.push_metrics.clone()));
        self.push_workers.push(Running { address: None, shutdown, task: Some(task) });
        self.wait_for_consumer(Role::Push, subjects::PUSH_STREAM, subjects::PUSH_CONSUMER).await?;
        Ok(self.push_workers.len() - 1)
    }

    /// Push registrations, settings and queues, read straight from JetStream.
    pub async fn push_storage(&self) -> anyhow::Result<store::PushStorage> {
        Ok(store::PushStorage::provision(self.connect_nats().await?, &self.fanout_config.storage).await?)
    }

    /// Waits until every log entry is fanned out and every push job is finished (acked or dead-lettered).
    pub async fn wait_until_push_settled(&self, deadline: Duration) -> anyhow::Result<()> {
        let jetstream = async_nats::jetstream::new(self.connect_nats().await?);
        let shards = self.fanout_config.storage.message_shards;
        crate::wait_until("fanout and push queues are empty", deadline, || {
            let jetstream = jetstream.clone();
            async move {
                let mut fanout_idle = true;
                for shard in subjects::Shard::all(shards) {
                    fanout_idle &= match jetstream.get_stream(shard.message_stream()).await {
                        Ok(stream) => stream.consumer_info(subjects::FANOUT_CONSUMER).await.is_ok_and(|info| info.num_pending == 0 && info.num_ack_pending == 0),
                        Err(_) => false,
                    };
                }
                let push_idle = match jetstream.get_stream(subjects::PUSH_STREAM).await {
                    Ok(mut stream) => stream.info().await.is_ok_and(|info| info.state.messages == 0),
                    Err(_) => false,
                };
                fanout_idle && push_idle
            }
        })
        .await
    }

    /// Drops a media worker mid-job: its NATS connection closes with the job unacked, as after SIGKILL.
    pub fn kill_media_worker(&mut self, index: usize) {
        if let Some(task) = self.media_workers[index].task.take() {
            task.abort();
        }
    }

    /// `host:port` of the system's clamd.
    pub fn clamd_address(&self) -> String {
        self.clamd.as_ref().expect("this system was built without media").address()
    }

    pub fn media_config(&self) -> &MediaWorkerConfig {
        &self.media_config
    }

    /// Stops a gateway the orderly way (clients get a close with a reason) and waits for it.
    pub async fn stop_gateway(&mut self, index: usize) -> anyhow::Result<()> {
        let running = &mut self.gateways[index];
        running.shutdown.cancel();
        if let Some(task) = running.task.take() {
            task.await.context("gateway task panicked")??;
        }
        Ok(())
    }

    /// Starts a stopped gateway again on the address it had, as a restarted process would: clients reconnect to the same URL.
    pub async fn restart_gateway(&mut self, index: usize) -> anyhow::Result<()> {
        anyhow::ensure!(self.gateways[index].task.is_none(), "gateway {index} is still running; stop it first");
        let address = self.gateways[index].address.expect("gateways have addresses");
        let listener = tokio::net::TcpListener::bind(address).await.with_context(|| format!("failed to bind {address} again"))?;
        let nats = self.connect_role(Role::Gateway).await?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(gateway::run(self.gateway_config.clone(), listener, nats, shutdown.clone()));
        self.gateways[index] = Running { address: Some(address), shutdown, task: Some(task) };
        let url = format!("{}/healthz", self.http_url(index));
        let http = self.http.clone();
        crate::wait_until("the restarted gateway answers", Duration::from_secs(20), || {
            let http = http.clone();
            let url = url.clone();
            async move { http.get(&url).send().await.is_ok_and(|response| response.status().is_success()) }
        })
        .await
    }

    /// Stops a gateway abruptly, as a crash would: no goodbyes.
    pub fn kill_gateway(&mut self, index: usize) {
        if let Some(task) = self.gateways[index].task.take() {
            task.abort();
        }
    }

    pub fn http_url(&self, gateway: usize) -> String {
        format!("http://{}", self.gateways[gateway].address.expect("gateways have addresses"))
    }

    pub fn ws_url(&self, gateway: usize) -> String {
        format!("ws://{}/v1/ws", self.gateways[gateway].address.expect("gateways have addresses"))
    }

    pub fn token(&self, user: &str) -> String {
        gateway::Authenticator::new(&self.gateway_config.jwt).mint(&Id::parse(user).expect("test user ids are valid"))
    }

    /// An analyst's token: every conversation with `None`, else only those listed.
    pub fn analyst_token(&self, user: &str, conversations: Option<&[&str]>) -> String {
        let conversations: Option<Vec<Id>> = conversations.map(|ids| ids.iter().map(|id| Id::parse(id).expect("test conversation ids are valid")).collect());
        gateway::Authenticator::new(&self.gateway_config.jwt).mint_analyst(&Id::parse(user).expect("test user ids are valid"), conversations.as_deref())
    }

    pub fn api(&self, gateway: usize, user: &str) -> Api {
        Api::new(self.http.clone(), self.http_url(gateway), self.token(user))
    }

    /// A device of `user` on `gateway`, live frames flowing at once.
    pub async fn connect(&self, gateway: usize, user: &str, device: &str) -> anyhow::Result<WsClient> {
        WsClient::connect(&self.ws_url(gateway), &self.token(user), Some(device), false).await
    }

    /// A device of `user` on `gateway` that will `sync` first (`?resume=1`).
    pub async fn connect_resuming(&self, gateway: usize, user: &str, device: &str) -> anyhow::Result<WsClient> {
        WsClient::connect(&self.ws_url(gateway), &self.token(user), Some(device), true).await
    }

    pub fn gateway_config(&self) -> &GatewayConfig {
        &self.gateway_config
    }

    /// The system's redis-server, to kill or restart it mid-test.
    pub fn redis(&mut self) -> &mut RedisServer {
        self.redis.as_mut().expect("this system was built without_redis")
    }
}

impl Drop for TestSystem {
    fn drop(&mut self) {
        let every_role = self.gateways.iter_mut().chain(self.fanouts.iter_mut()).chain(self.media_workers.iter_mut()).chain(self.push_workers.iter_mut());
        for running in every_role.chain(self.indexers.iter_mut()) {
            running.shutdown.cancel();
            if let Some(task) = running.task.take() {
                task.abort();
            }
        }
    }
}

/// `media-signatures/` at the workspace root: the signature database the repo ships for clamd.
pub(crate) fn media_signature_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("media-signatures")
}

/// Development settings with rate limits loose enough for tests that send in bursts from one
/// address, and no spam signal (tests send the same text everywhere); the abuse tests set
/// their own through [`SystemBuilder::gateway_config`].
fn test_gateway_config() -> GatewayConfig {
    let mut config = GatewayConfig::for_development(TEST_SECRET);
    let loose = Some(gateway::rate_limit::Bucket { burst: 100_000, per_second: 100_000.0 });
    let loose_limits = gateway::rate_limit::ActionLimits { per_user: loose, per_address: loose };
    config.rate_limits = gateway::rate_limit::RateLimits { send: loose_limits, connect: loose_limits, upload: loose_limits };
    config.content_policy.spam_max_conversations = 0;
    config
}
