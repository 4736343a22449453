//! Routes `deliver.<user>` traffic, and the user's multicast groups' (`multicast_router.rs`), to the devices connected here, in order, exactly once per device.
//!
//! One task per connected user owns that user's subscription and device states (a closed
//! command enum, no shared locks); it subscribes when the first device arrives and
//! unsubscribes when the last one leaves.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::StreamExt;
use store::LogReader;
use subjects::Id;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

use crate::delivery_order::{Decision, DeviceCursors};
use crate::multicast_router::MulticastRouter;
use crate::outbound::{close_codes, Outbound};
use crate::receipt_coalescer::DeliveredSink;

pub type ConnectionId = u64;

/// How far back the first delivery of a conversation looks for messages sent since the device connected.
const FIRST_SEEN_LOOKBACK: u64 = 64;

/// A connected device as the hub sees it.
pub struct DeviceAttachment {
    pub connection: ConnectionId,
    /// The device id the client named (or was given); delivered receipts are per device.
    pub device: Id,
    /// The device's ordinary frame queue (bounded; full means the device is too slow).
    pub outbound: mpsc::Sender<Outbound>,
    /// The writer's priority lane, used here only to close a device that fell behind.
    pub control: mpsc::Sender<Outbound>,
    /// `?resume=1`: hold live frames until the device's first sync is answered.
    pub hold_until_synced: bool,
    /// Cap on frames held while syncing.
    pub max_held: usize,
}

enum UserCommand {
    Attach(DeviceAttachment),
    /// A delivery of one of the user's multicast groups (`mcast.<conv>`), handled like one on `deliver.<user>`.
    Multicast(async_nats::Message),
    /// The user joined a multicast group while connected: anything appended before its subscription opened is read from the log.
    CatchUp(Id),
    Detach(ConnectionId),
    BeginSync { connection: ConnectionId, ready: oneshot::Sender<()> },
    EndSync { connection: ConnectionId, cursors: BTreeMap<Id, u64> },
}

pub enum AttachError {
    /// The user has this many devices connected here already.
    TooManyDevices(usize),
    /// Could not subscribe for the user's deliveries.
    Unavailable(anyhow::Error),
}

struct UserEntry {
    commands: mpsc::UnboundedSender<UserCommand>,
    connections: usize,
}

pub struct DeliveryHub {
    client: async_nats::Client,
    reader: LogReader,
    users: tokio::sync::Mutex<HashMap<Id, UserEntry>>,
    next_connection: AtomicU64,
    tasks: TaskTracker,
    delivered: DeliveredSink,
    /// Set once at start (the router needs the hub, so it comes second).
    multicast: std::sync::OnceLock<MulticastRouter>,
}

impl DeliveryHub {
    pub fn new(client: async_nats::Client, reader: LogReader, tasks: TaskTracker, delivered: DeliveredSink) -> DeliveryHub {
        let users = tokio::sync::Mutex::new(HashMap::new());
        DeliveryHub { client, reader, users, next_connection: AtomicU64::new(1), tasks, delivered, multicast: std::sync::OnceLock::new() }
    }

    pub fn set_multicast_router(&self, router: MulticastRouter) {
        let _ = self.multicast.set(router);
    }

    /// After `user` joined a multicast group here: what was appended before the group's subscription
    /// opened reached nobody here live, so the user's devices read it from the log.
    pub async fn catch_up(&self, user: &Id, conversation: &Id) {
        if let Some(entry) = self.users.lock().await.get(user) {
            let _ = entry.commands.send(UserCommand::CatchUp(conversation.clone()));
        }
    }

    /// Hands one multicast delivery to each of `users` still connected here (`personal` replaces the
    /// payload for some): one lock for the whole group, not one per member.
    pub async fn deliver_multicast(&self, users: &[Id], delivery: &async_nats::Message, personal: &HashMap<Id, Bytes>) {
        let entries = self.users.lock().await;
        for user in users {
            let Some(entry) = entries.get(user) else { continue };
            let delivery = match personal.get(user) {
                Some(payload) => async_nats::Message { payload: payload.clone(), ..delivery.clone() },
                None => delivery.clone(),
            };
            let _ = entry.commands.send(UserCommand::Multicast(delivery));
        }
    }

    pub fn next_connection_id(&self) -> ConnectionId {
        self.next_connection.fetch_add(1, Ordering::Relaxed)
    }

    /// Starts delivering to a device, unless `user` already has `max_devices` connected here.
    pub async fn attach(&self, user: &Id, attachment: DeviceAttachment, max_devices: usize) -> Result<(), AttachError> {
        let mut users = self.users.lock().await;
        if let Some(entry) = users.get(user) {
            if entry.connections >= max_devices {
                return Err(AttachError::TooManyDevices(entry.connections));
            }
        }
        if !users.contains_key(user) {
            let subscriber = self.client.subscribe(subjects::deliver_subject(user)).await.map_err(|error| AttachError::Unavailable(error.into()))?;
            // The SUB is on the wire before the caller tells the client it is connected.
            self.client.flush().await.map_err(|error| AttachError::Unavailable(error.into()))?;
            let (commands_tx, commands_rx) = mpsc::unbounded_channel();
            let task = UserDeliveries { user: user.clone(), reader: self.reader.clone(), devices: HashMap::new(), delivered: self.delivered.clone() };
            self.tasks.spawn(task.run(subscriber, commands_rx));
            users.insert(user.clone(), UserEntry { commands: commands_tx, connections: 0 });
            if let Some(router) = self.multicast.get() {
                // The user's multicast groups are subscribed before the device is told it is connected, like `deliver.<user>`.
                router.user_online(user).await;
            }
        }
        let entry = users.get_mut(user).expect("inserted above");
        entry.connections += 1;
        let _ = entry.commands.send(UserCommand::Attach(attachment));
        Ok(())
    }

    pub async fn detach(&self, user: &Id, connection: ConnectionId) {
        let mut users = self.users.lock().await;
        let Some(entry) = users.get_mut(user) else { return };
        let _ = entry.commands.send(UserCommand::Detach(connection));
        entry.connections -= 1;
        if entry.connections == 0 {
            // Dropping the sender ends the user's task, which drops (unsubscribes) its subscription.
            users.remove(user);
            if let Some(router) = self.multicast.get() {
                router.user_offline(user);
            }
        }
    }

    /// From now until `end_sync`, live deliveries to this device are held back.
    pub async fn begin_sync(&self, user: &Id, connection: ConnectionId) {
        let (ready_tx, ready_rx) = oneshot::channel();
        if let Some(entry) = self.users.lock().await.get(user) {
            let _ = entry.commands.send(UserCommand::BeginSync { connection, ready: ready_tx });
        }
        let _ = ready_rx.await;
    }

    /// The device now holds `cursors`; held deliveries are released through the usual ordering.
    pub async fn end_sync(&self, user: &Id, connection: ConnectionId, cursors: BTreeMap<Id, u64>) {
        if let Some(entry) = self.users.lock().await.get(user) {
            let _ = entry.commands.send(UserCommand::EndSync { connection, cursors });
        }
    }
}

struct DeviceState {
    attachment: DeviceAttachment,
    cursors: DeviceCursors,
    held: Option<Vec<Delivery>>,
    connected_at: time::OffsetDateTime,
}

#[derive(Clone)]
struct Delivery {
    conversation: Id,
    seq: u64,
    /// From the fanout's header; a delivery without one is announced to every member.
    sender: Option<Id>,
    /// From the fanout's header: when the sending gateway stamped the message.
    sent_at_micros: Option<i64>,
    payload: Bytes,
}

/// Why a device has to go (the close reason it is told, and the short label the slow-consumer counter uses): it reconnects and resumes from its cursors.
struct Disconnect(&'static str, &'static str);

impl Disconnect {
    /// Counts the disconnect unless the socket was already gone, which is no consumer being slow.
    fn count(&self) {
        if self.1 != CONNECTION_CLOSED {
            telemetry::gateway_metrics().count_slow_consumer_disconnect(self.1);
        }
    }
}

const CONNECTION_CLOSED: &str = "connection_closed";

/// Every `reason` label of `natter_slow_consumer_disconnects_total`; `sync_aborted` is counted by the sync path.
pub const SLOW_CONSUMER_REASONS: [&str; 5] = ["queue_full", "held_overflow", "gap_fill_failed", "log_read_failed", "sync_aborted"];

struct UserDeliveries {
    user: Id,
    reader: LogReader,
    devices: HashMap<ConnectionId, DeviceState>,
    delivered: DeliveredSink,
}

impl UserDeliveries {
    async fn run(mut self, mut subscriber: async_nats::Subscriber, mut commands_rx: mpsc::UnboundedReceiver<UserCommand>) {
        loop {
            tokio::select! {
                command = commands_rx.recv() => match command {
                    Some(command) => self.apply(command).await,
                    None => break,
                },
                message = subscriber.next() => match message {
                    Some(message) => self.deliver(message).await,
                    None => {
                        self.close_all("delivery subscription ended; reconnect");
                        break;
                    }
                },
            }
        }
        tracing::debug!(user = %self.user, "user delivery task ended");
    }

    async fn apply(&mut self, command: UserCommand) {
        match command {
            UserCommand::Attach(attachment) => {
                let held = attachment.hold_until_synced.then(Vec::new);
                let device = DeviceState { attachment, cursors: DeviceCursors::default(), held, connected_at: time::OffsetDateTime::now_utc() };
                self.devices.insert(device.attachment.connection, device);
            }
            UserCommand::Multicast(delivery) => self.deliver(delivery).await,
            UserCommand::CatchUp(conversation) => self.catch_up(conversation).await,
            UserCommand::Detach(connection) => {
                self.devices.remove(&connection);
            }
            UserCommand::BeginSync { connection, ready } => {
                if let Some(device) = self.devices.get_mut(&connection) {
                    device.held.get_or_insert_with(Vec::new);
                }
                let _ = ready.send(());
            }
            UserCommand::EndSync { connection, cursors } => {
                let Some(device) = self.devices.get_mut(&connection) else { return };
                for (conversation, seq) in &cursors {
                    device.cursors.advance(conversation, *seq);
                }
                let held = device.held.take().unwrap_or_default();
                for delivery in held {
                    self.offer(connection, &delivery).await;
                }
            }
        }
    }

    async fn deliver(&mut self, message: async_nats::Message) {
        let Some(delivery) = parse_delivery(&message) else {
            // Not a log entry (typing, receipts, presence): unordered and best-effort, straight to every device.
            self.forward_event(message.payload);
            return;
        };
        let connections: Vec<ConnectionId> = self.devices.keys().copied().collect();
        for connection in connections {
            self.offer(connection, &delivery).await;
        }
    }

    async fn offer(&mut self, connection: ConnectionId, delivery: &Delivery) {
        let Some(device) = self.devices.get_mut(&connection) else { return };
        let outcome = offer_to_device(&self.reader, &self.user, device, delivery).await;
        if let Ok(Offered::Pushed { earlier_senders }) = &outcome {
            if let Some(sent_at_micros) = delivery.sent_at_micros {
                observe_delivery_latency(sent_at_micros);
            }
            let senders = delivery.sender.as_ref().map(|sender| std::iter::once(sender).chain(earlier_senders));
            self.delivered.record(&delivery.conversation, &self.user, &device.attachment.device, delivery.seq, senders);
        }
        if let Err(disconnect) = outcome {
            disconnect.count();
            let Disconnect(reason, _) = disconnect;
            if let Some(device) = self.devices.remove(&connection) {
                let _ = device.attachment.control.try_send(Outbound::Close { code: close_codes::TRY_AGAIN_LATER, reason: reason.to_owned() });
            }
        }
    }

    /// Offers the conversation's last entry, as if delivered now, to each device that holds the
    /// conversation or connected before it was appended: the usual ordering then fills whatever
    /// came before it, and a device that knows nothing of it is not sent an old message.
    async fn catch_up(&mut self, conversation: Id) {
        let last = match self.reader.last_entry(&conversation).await {
            Ok(Some((_, last))) => last,
            Ok(None) => return,
            Err(error) => {
                // Not lost: the next delivery fills the gap, and `sync` reads the log.
                tracing::warn!(%error, %conversation, "could not read the tail to catch a new member up");
                return;
            }
        };
        let sent_at = last.message.sent_at;
        let Ok(mut items) = self.reader.fold(&conversation, vec![last], &self.user).await else { return };
        let Some(item) = items.pop() else { return };
        let sender = Id::parse(item.sender()).ok();
        let delivery = Delivery { conversation: conversation.clone(), seq: item.seq(), sender, sent_at_micros: None, payload: Bytes::from(item.into_frame().to_json()) };
        let connections: Vec<ConnectionId> = self
            .devices
            .iter()
            .filter(|(_, device)| device.connected_at <= sent_at || device.cursors.decide(&conversation, delivery.seq) != Decision::FirstSeen)
            .map(|(connection, _)| *connection)
            .collect();
        for connection in connections {
            self.offer(connection, &delivery).await;
        }
    }

    fn forward_event(&mut self, payload: Bytes) {
        let mut too_slow = Vec::new();
        for (connection, device) in &self.devices {
            if device.held.is_some() {
                continue;
            }
            match device.attachment.outbound.try_send(Outbound::Text(payload.clone())) {
                Ok(()) => {}
                // An event (presence, typing, a receipt) is best-effort, and a burst of them — 2,000
                // members coming online are 1,999 presence frames for each — must not close a device
                // that keeps up with its messages: dropped, and counted. A device that really falls
                // behind is closed by its next message, which is never dropped.
                Err(mpsc::error::TrySendError::Full(_)) => {
                    telemetry::gateway_metrics().events_dropped.inc();
                }
                Err(mpsc::error::TrySendError::Closed(_)) => too_slow.push((*connection, "connection closed")),
            }
        }
        for (connection, reason) in too_slow {
            if let Some(device) = self.devices.remove(&connection) {
                let _ = device.attachment.control.try_send(Outbound::Close { code: close_codes::TRY_AGAIN_LATER, reason: reason.to_owned() });
            }
        }
    }

    fn close_all(&mut self, reason: &str) {
        for (_, device) in self.devices.drain() {
            let _ = device.attachment.control.try_send(Outbound::Close { code: close_codes::GOING_AWAY, reason: reason.to_owned() });
        }
    }
}

/// What became of a delivery offered to a device.
enum Offered {
    Held,
    Dropped,
    /// Pushed, after any earlier messages the device was missing (whose authors learn of it too).
    Pushed { earlier_senders: BTreeSet<Id> },
}

async fn offer_to_device(reader: &LogReader, user: &Id, device: &mut DeviceState, delivery: &Delivery) -> Result<Offered, Disconnect> {
    if let Some(held) = &mut device.held {
        if held.len() >= device.attachment.max_held {
            return Err(Disconnect("too many messages arrived while syncing; resume with sync", "held_overflow"));
        }
        held.push(delivery.clone());
        return Ok(Offered::Held);
    }
    let conversation = &delivery.conversation;
    let mut earlier_senders = BTreeSet::new();
    let earlier = match device.cursors.decide(conversation, delivery.seq) {
        Decision::Drop => return Ok(Offered::Dropped),
        Decision::Deliver => Vec::new(),
        Decision::FillGap { first_missing } => reader
            .folded_range(conversation, first_missing, delivery.seq - 1, user)
            .await
            .map_err(|_| Disconnect("could not fill a gap in delivery; resume with sync", "gap_fill_failed"))?,
        Decision::FirstSeen => {
            // Another fanout worker may still be delivering entries appended after this device
            // connected but ordered before this one: look for them in the log.
            let mut earlier = Vec::new();
            let mut seq = delivery.seq;
            while seq > 1 && delivery.seq - seq < FIRST_SEEN_LOOKBACK {
                match reader.get_by_seq(conversation, seq - 1).await {
                    Ok(Some(stored)) if stored.message.sent_at >= device.connected_at => {
                        earlier.push(stored);
                        seq -= 1;
                    }
                    Ok(_) => break,
                    Err(_) => return Err(Disconnect("could not read the log; resume with sync", "log_read_failed")),
                }
            }
            earlier.reverse();
            reader.fold(conversation, earlier, user).await.map_err(|_| Disconnect("could not read the log; resume with sync", "log_read_failed"))?
        }
    };
    for item in earlier {
        if let Ok(sender) = Id::parse(item.sender()) {
            earlier_senders.insert(sender);
        }
        push(device, Outbound::frame(&item.into_frame()))?;
    }
    push(device, Outbound::Text(delivery.payload.clone()))?;
    device.cursors.advance(conversation, delivery.seq);
    Ok(Offered::Pushed { earlier_senders })
}

fn push(device: &DeviceState, frame: Outbound) -> Result<(), Disconnect> {
    device.attachment.outbound.try_send(frame).map_err(|error| match error {
        mpsc::error::TrySendError::Full(_) => Disconnect("device is not reading fast enough; resume with sync", "queue_full"),
        mpsc::error::TrySendError::Closed(_) => Disconnect("connection closed", CONNECTION_CLOSED),
    })
}

fn parse_delivery(message: &async_nats::Message) -> Option<Delivery> {
    let headers = message.headers.as_ref()?;
    let conversation = Id::parse(headers.get(subjects::HEADER_CONVERSATION)?.as_str()).ok()?;
    let seq = headers.get(subjects::HEADER_SEQ)?.as_str().parse().ok()?;
    let sender = headers.get(subjects::HEADER_SENDER).and_then(|sender| Id::parse(sender.as_str()).ok());
    let sent_at_micros = headers.get(subjects::HEADER_SENT_AT_MICROS).and_then(|value| value.as_str().parse().ok());
    Some(Delivery { conversation, seq, sender, sent_at_micros, payload: message.payload.clone() })
}

/// Wall-clock time from the sender's gateway stamping the message to this gateway queuing the frame on
/// the device's socket; across gateways it trusts their clocks to agree (NTP), and a negative span counts as zero.
fn observe_delivery_latency(sent_at_micros: i64) {
    let now_micros = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |now| now.as_micros() as i64);
    let latency_seconds = (now_micros - sent_at_micros).max(0) as f64 / 1_000_000.0;
    telemetry::gateway_metrics().delivery_latency_seconds.observe(latency_seconds);
}

#[cfg(test)]
#[path = "delivery_hub_tests.rs"]
mod tests;
