//! Presence: one task per gateway keeps this gateway's device connections alive in Redis and announces transitions.
//!
//! Connections arrive as `Connected`/`Disconnected` commands; each batch of commands is one
//! pipelined round trip of Lua scripts (see `presence_scripts.rs`) that say, atomically across
//! gateways, whether the user just came online or went offline. Every heartbeat interval the task
//! refreshes the expiry of every live connection here, retries removals that failed, and sweeps
//! users whose devices all expired (a crashed gateway's) — all in one round trip. So after a Redis
//! restart presence is whole again within one interval. Announcements (a `presence` frame to each
//! contact) run in their own tasks, chained per user so one user's announcements stay in order
//! without a slow contact lookup holding up everybody else's.
//!
//! Without Redis (`NATTER_REDIS_URL` unset) presence is disabled: [`Presence::disabled`] ignores
//! every call and no `presence` frame is ever sent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Value;
use subjects::redis_keys;
use subjects::Id;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::delivery_hub::ConnectionId;
use crate::heartbeat::SILENT_INTERVALS_BEFORE_TIMEOUT;
use crate::presence_scripts::PresenceScripts;
use crate::presence_status::{announce_current_status, integer, ContactDirectory, PresenceReader, REDIS_CALL_TIMEOUT};

/// Commands taken from the queue into one pipeline at most.
const MAX_COMMANDS_PER_BATCH: usize = 512;
/// After a failed refresh (Redis down or restarting), try again this soon rather than a whole interval later.
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(100);

/// The handle sessions and the WebSocket code use; cheap to clone, and a no-op when presence is disabled.
#[derive(Clone)]
pub struct Presence {
    enabled: Option<Arc<PresenceShared>>,
}

struct PresenceShared {
    /// Unbounded: commands are tiny, one per connect or disconnect, and sending must never block a socket.
    commands: mpsc::UnboundedSender<PresenceCommand>,
    reader: PresenceReader,
    directory: ContactDirectory,
}

enum PresenceCommand {
    /// `registered` is answered once Redis has taken (or refused) the connection.
    Connected { user: Id, connection: ConnectionId, registered: oneshot::Sender<()> },
    Disconnected { user: Id, connection: ConnectionId },
    /// Sent once every connection here has closed: finish what is queued, then answer.
    Stop { done: oneshot::Sender<()> },
}

/// What the presence task needs besides Redis.
pub struct PresenceSettings {
    /// Names this gateway process in presence members, so gateways never overwrite each other's devices.
    pub gateway_instance: String,
    pub heartbeat_interval: Duration,
    pub nats: async_nats::Client,
    pub directory: ContactDirectory,
    /// Announcement tasks, so shutdown can wait for them before flushing NATS.
    pub tasks: TaskTracker,
}

impl Presence {
    pub fn disabled() -> Presence {
        Presence { enabled: None }
    }

    /// Starts the presence task; it ends after [`Presence::stop`].
    pub fn start(redis: ConnectionManager, settings: PresenceSettings) -> (Presence, JoinHandle<()>) {
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let reader = PresenceReader { redis: redis.clone(), scripts: Arc::new(PresenceScripts::default()) };
        let task = PresenceTask {
            redis,
            reader: reader.clone(),
            directory: settings.directory.clone(),
            nats: settings.nats,
            gateway_instance: settings.gateway_instance,
            interval: settings.heartbeat_interval,
            ttl_millis: u64::try_from((settings.heartbeat_interval * SILENT_INTERVALS_BEFORE_TIMEOUT).as_millis()).unwrap_or(u64::MAX),
            live: HashMap::new(),
            failed_removals: Vec::new(),
            announcement_chains: HashMap::new(),
            tasks: settings.tasks,
        };
        let handle = tokio::spawn(task.run(commands_rx));
        let shared = PresenceShared { commands: commands_tx, reader, directory: settings.directory };
        (Presence { enabled: Some(Arc::new(shared)) }, handle)
    }

    /// Registers a device connection and waits (at most `patience`) until Redis has it, so that a device
    /// that has been answered once counts as online everywhere.
    pub async fn connected(&self, user: &Id, connection: ConnectionId, patience: Duration) {
        if let Some(shared) = &self.enabled {
            let (registered_tx, registered_rx) = oneshot::channel();
            let command = PresenceCommand::Connected { user: user.clone(), connection, registered: registered_tx };
            if shared.commands.send(command).is_ok() {
                let _ = tokio::time::timeout(patience, registered_rx).await;
            }
        }
    }

    pub fn disconnected(&self, user: &Id, connection: ConnectionId) {
        if let Some(shared) = &self.enabled {
            let _ = shared.commands.send(PresenceCommand::Disconnected { user: user.clone(), connection });
        }
    }

    /// Reader and contact directory for snapshots; `None` when presence is disabled.
    pub fn reader_and_directory(&self) -> Option<(&PresenceReader, &ContactDirectory)> {
        self.enabled.as_ref().map(|shared| (&shared.reader, &shared.directory))
    }

    /// Processes every command queued so far (the disconnects of a stopping gateway), then ends the task.
    pub async fn stop(&self) {
        if let Some(shared) = &self.enabled {
            let (done_tx, done_rx) = oneshot::channel();
            if shared.commands.send(PresenceCommand::Stop { done: done_tx }).is_ok() {
                let _ = done_rx.await;
            }
        }
    }
}

struct PresenceTask {
    redis: ConnectionManager,
    reader: PresenceReader,
    directory: ContactDirectory,
    nats: async_nats::Client,
    gateway_instance: String,
    interval: Duration,
    ttl_millis: u64,
    /// Every connection open on this gateway, refreshed each interval.
    live: HashMap<ConnectionId, Id>,
    /// Disconnects Redis did not take; retried each tick until it does.
    failed_removals: Vec<(Id, ConnectionId)>,
    /// The latest announcement task per user; the next one waits for it, keeping each user's announcements in order.
    announcement_chains: HashMap<Id, JoinHandle<()>>,
    tasks: TaskTracker,
}

impl PresenceTask {
    async fn run(mut self, mut commands_rx: mpsc::UnboundedReceiver<PresenceCommand>) {
        let mut next_tick = Instant::now() + self.interval;
        // Connections register themselves as they come; until the first round there is nothing older than now.
        telemetry::gateway_metrics().record_presence_refresh();
        let mut batch = Vec::with_capacity(MAX_COMMANDS_PER_BATCH);
        loop {
            tokio::select! {
                received = commands_rx.recv_many(&mut batch, MAX_COMMANDS_PER_BATCH) => {
                    if received == 0 {
                        break;
                    }
                    if let Some(done) = self.apply(&mut batch).await {
                        let _ = done.send(());
                        break;
                    }
                }
                _ = tokio::time::sleep_until(next_tick) => {
                    let refreshed = self.tick().await;
                    next_tick = Instant::now() + if refreshed { self.interval } else { RETRY_AFTER_FAILURE.min(self.interval) };
                }
            }
        }
        tracing::debug!("presence task ended");
    }

    /// Applies a batch of commands in one round trip; returns the stop request if the batch held one.
    async fn apply(&mut self, batch: &mut Vec<PresenceCommand>) -> Option<oneshot::Sender<()>> {
        let mut pipe = redis::pipe();
        let mut changed = Vec::new();
        let mut removals = Vec::new();
        let mut registered = Vec::new();
        let mut stop = None;
        for command in batch.drain(..) {
            match command {
                PresenceCommand::Connected { user, connection, registered: registered_tx } => {
                    registered.push(registered_tx);
                    let member = redis_keys::presence_member(&self.gateway_instance, connection);
                    self.reader.scripts.queue_connect(&mut pipe, &user, &member, self.ttl_millis);
                    self.live.insert(connection, user.clone());
                    changed.push(user);
                }
                PresenceCommand::Disconnected { user, connection } => {
                    let member = redis_keys::presence_member(&self.gateway_instance, connection);
                    self.reader.scripts.queue_disconnect(&mut pipe, &user, &member);
                    self.live.remove(&connection);
                    removals.push((user.clone(), connection));
                    changed.push(user);
                }
                PresenceCommand::Stop { done } => stop = Some(done),
            }
        }
        if changed.is_empty() {
            return stop;
        }
        let outcome = self.query::<Vec<i64>>(&pipe).await;
        for registered_tx in registered {
            let _ = registered_tx.send(());
        }
        match outcome {
            Ok(transitions) => {
                for (user, transition) in changed.into_iter().zip(transitions) {
                    if transition == 1 {
                        self.announce(user);
                    }
                }
            }
            Err(error) => {
                // A connect that failed is added (and announced) by the next successful refresh; a
                // disconnect has no such second chance, so it is kept and retried.
                tracing::warn!(%error, "presence update failed; retrying on the next tick");
                self.failed_removals.extend(removals);
            }
        }
        stop
    }

    /// Retries failed removals, refreshes every live connection and sweeps expired users, in one round trip.
    /// Returns false if Redis did not answer.
    async fn tick(&mut self) -> bool {
        self.announcement_chains.retain(|_, announcement| !announcement.is_finished());
        let mut pipe = redis::pipe();
        for (user, connection) in &self.failed_removals {
            let member = redis_keys::presence_member(&self.gateway_instance, *connection);
            self.reader.scripts.queue_disconnect(&mut pipe, user, &member);
        }
        let live: Vec<(ConnectionId, Id)> = self.live.iter().map(|(connection, user)| (*connection, user.clone())).collect();
        for (connection, user) in &live {
            let member = redis_keys::presence_member(&self.gateway_instance, *connection);
            self.reader.scripts.queue_connect(&mut pipe, user, &member, self.ttl_millis);
        }
        self.reader.scripts.queue_sweep(&mut pipe);
        let replies = match self.query::<Vec<Value>>(&pipe).await {
            Ok(replies) => replies,
            Err(error) => {
                tracing::warn!(%error, live = live.len(), "presence refresh failed; retrying shortly");
                return false;
            }
        };
        telemetry::gateway_metrics().record_presence_refresh();
        let mut replies = replies.into_iter();
        let removed = std::mem::take(&mut self.failed_removals);
        let refreshed = live.into_iter().map(|(_, user)| user);
        // A refresh that finds the user had no live device (Redis restarted, or their devices here were
        // swept while Redis was out of reach) announces them online again.
        for user in removed.into_iter().map(|(user, _)| user).chain(refreshed) {
            if replies.next().as_ref().map(integer) == Some(1) {
                self.announce(user);
            }
        }
        if let Some(Value::Array(gone)) = replies.next() {
            for user in gone {
                let Value::BulkString(bytes) = user else { continue };
                match std::str::from_utf8(&bytes).ok().and_then(|user| Id::parse(user).ok()) {
                    Some(user) => self.announce(user),
                    None => tracing::warn!("presence sweep returned a malformed user id"),
                }
            }
        }
        true
    }

    async fn query<T: redis::FromRedisValue>(&mut self, pipe: &redis::Pipeline) -> anyhow::Result<T> {
        let reply = tokio::time::timeout(REDIS_CALL_TIMEOUT, self.reader.scripts.query(&mut self.redis, pipe)).await;
        Ok(reply.map_err(|_| anyhow::anyhow!("redis did not answer within {REDIS_CALL_TIMEOUT:?}"))??)
    }

    /// Announces `user`'s current presence to their contacts after their previous announcement.
    fn announce(&mut self, user: Id) {
        let previous = self.announcement_chains.remove(&user);
        let (reader, directory, nats) = (self.reader.clone(), self.directory.clone(), self.nats.clone());
        let announcing = user.clone();
        let announcement = self.tasks.spawn(async move {
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            if let Err(error) = announce_current_status(&reader, &directory, &nats, &announcing).await {
                tracing::warn!(%error, user = %announcing, "failed to announce presence");
            }
        });
        self.announcement_chains.insert(user, announcement);
    }
}
