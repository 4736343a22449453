//! A chaos workload with accounting: users chat in groups and direct conversations through real gateways while a test injures the system, then every acked message is accounted for in history and on every member device.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::chaos_device::ChaosDevice;
pub use crate::chaos_report::ChaosReport;
use crate::process_system::ProcessSystem;
use crate::wait_until;

/// A send without an ack in this long is retried (with the same client_msg_id).
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Between attempts while the system is down: fast enough to measure outages, slow enough not to spin.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// After the run stops, a message still unacked this much later is abandoned (and reported).
const GIVE_UP_AFTER_STOP: Duration = Duration::from_secs(45);
/// How long every device gets, after its final sync, to be shown everything stored.
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(60);

/// The shape of the workload.
#[derive(Debug, Clone)]
pub struct ChaosPlan {
    pub users: usize,
    pub devices_per_user: usize,
    pub groups: usize,
    pub group_size: usize,
    /// Each user's first device sends one message per interval, round-robin over its conversations.
    pub send_interval: Duration,
    /// Group `g` also has member `off{g}`, who never connects: the one who gets push notifications.
    pub offline_member_per_group: bool,
}

impl Default for ChaosPlan {
    fn default() -> ChaosPlan {
        ChaosPlan {
            users: 12,
            devices_per_user: 2,
            groups: 4,
            group_size: 5,
            send_interval: Duration::from_millis(100),
            offline_member_per_group: false,
        }
    }
}

pub(crate) struct Conversation {
    pub(crate) id: String,
    pub(crate) members: Vec<String>,
}

#[derive(Debug, Default)]
struct Ledger {
    /// (conversation, seq) → client_msg_id of every acked send.
    acked: HashMap<(String, u64), String>,
    abandoned: Vec<String>,
    failed_attempts: u64,
    failures_by_kind: BTreeMap<String, u64>,
    /// The first error text of each kind, to say what the failures were.
    first_failure_of_kind: BTreeMap<String, String>,
    longest_send_failure: Duration,
}

impl Ledger {
    fn count_failure(&mut self, error: &anyhow::Error) {
        let kind = failure_kind(error);
        self.failed_attempts += 1;
        *self.failures_by_kind.entry(kind.clone()).or_default() += 1;
        self.first_failure_of_kind.entry(kind).or_insert_with(|| format!("{error:#}"));
    }
}

/// A running workload; `finish` stops it and accounts for every acked message.
pub struct Chaos {
    conversations: Vec<Conversation>,
    ledger: Arc<Mutex<Ledger>>,
    stop: CancellationToken,
    give_up: CancellationToken,
    devices: Vec<JoinHandle<ChaosDevice>>,
    started: Instant,
}

impl Chaos {
    /// Creates the conversations, connects every device (spread over the gateways) and starts sending.
    pub async fn start(system: &ProcessSystem, plan: ChaosPlan) -> anyhow::Result<Chaos> {
        let users: Vec<String> = (0..plan.users).map(|user| format!("u{user}")).collect();
        let conversations = create_conversations(system, &users, &plan).await?;
        let urls = Arc::new(system.ws_urls());
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let stop = CancellationToken::new();
        let give_up = CancellationToken::new();
        let mut devices = Vec::new();
        for (user_number, user) in users.iter().enumerate() {
            let theirs: Vec<String> = conversations
                .iter()
                .filter(|conversation| conversation.members.contains(user))
                .map(|conversation| conversation.id.clone())
                .collect();
            for device_number in 0..plan.devices_per_user {
                let mut device = ChaosDevice::new(
                    user,
                    &format!("d{device_number}"),
                    system.token(user),
                    theirs.clone(),
                );
                let mut gateway =
                    (user_number * plan.devices_per_user + device_number) % urls.len();
                connect_somewhere(&mut device, &urls, &mut gateway, &give_up).await?;
                let sends = (device_number == 0).then(|| Sends {
                    conversations: theirs.clone(),
                    interval: plan.send_interval,
                });
                let run = DeviceRun {
                    device,
                    urls: urls.clone(),
                    gateway,
                    sends,
                    stop: stop.clone(),
                    give_up: give_up.clone(),
                    ledger: ledger.clone(),
                };
                devices.push(tokio::spawn(run.run()));
            }
        }
        Ok(Chaos {
            conversations,
            ledger,
            stop,
            give_up,
            devices,
            started: Instant::now(),
        })
    }

    /// How many send attempts have failed so far.
    pub fn failed_attempts(&self) -> u64 {
        self.ledger.lock().expect("ledger lock").failed_attempts
    }

    /// How many sends have been acked so far.
    pub fn acked(&self) -> usize {
        self.ledger.lock().expect("ledger lock").acked.len()
    }

    /// Waits until at least `count` more sends are acked than now: faults then land mid-run, not in a quiet moment.
    pub async fn wait_for_acks(&self, count: usize, deadline: Duration) -> anyhow::Result<()> {
        let target = self.acked() + count;
        wait_until(
            &format!("{target} sends are acked"),
            deadline,
            || async move { self.acked() >= target },
        )
        .await
    }

    /// Stops sending (in-flight sends still finish), syncs every device once more, and accounts for everything.
    pub async fn finish(
        self,
        scenario: &str,
        system: &ProcessSystem,
    ) -> anyhow::Result<ChaosReport> {
        let ran_for = self.started.elapsed();
        self.stop.cancel();
        let give_up = self.give_up.clone();
        let give_up_timer = tokio::spawn(async move {
            tokio::time::sleep(GIVE_UP_AFTER_STOP).await;
            give_up.cancel();
        });
        let mut devices = Vec::new();
        for device in self.devices {
            devices.push(device.await.context("a device task panicked")?);
        }
        give_up_timer.abort();
        let ledger = std::mem::take(&mut *self.ledger.lock().expect("ledger lock"));

        let mut report = ChaosReport {
            scenario: scenario.to_owned(),
            ran_for,
            acked: ledger.acked.len(),
            abandoned: ledger.abandoned.len(),
            failed_attempts: ledger.failed_attempts,
            failures_by_kind: ledger.failures_by_kind.clone(),
            first_failure_of_kind: ledger.first_failure_of_kind.clone(),
            longest_send_failure: ledger.longest_send_failure,
            ..ChaosReport::default()
        };
        report.acked_messages = ledger
            .acked
            .iter()
            .map(|((conversation, _), client_msg_id)| (conversation.clone(), client_msg_id.clone()))
            .collect();
        let mut stored_last = HashMap::new();
        for conversation in &self.conversations {
            let stored = stored_history(system, conversation).await?;
            report.stored += stored.len();
            report.check_history(&conversation.id, &stored, &ledger.acked);
            stored_last.insert(conversation.id.clone(), stored.len() as u64);
        }
        let urls = system.ws_urls();
        for (number, mut device) in devices.into_iter().enumerate() {
            report.reconnects += device.reconnects;
            // The final sync: a fresh connection resuming from what the device holds, as an app coming back would.
            let mut gateway = number % urls.len();
            connect_somewhere(&mut device, &urls, &mut gateway, &CancellationToken::new()).await?;
            let screen = device.screen.clone();
            let wanted = stored_last.clone();
            let label = format!(
                "{}/{} is shown every stored message",
                device.user, device.device
            );
            wait_until(&label, CATCH_UP_DEADLINE, || {
                let caught_up = wanted.iter().all(|(conversation, last)| {
                    !device_is_member(&self.conversations, conversation, &device.user)
                        || screen.lock().expect("screen lock").held(conversation) >= *last
                });
                async move { caught_up }
            })
            .await?;
            report.check_screen(&device, &self.conversations, &ledger.acked);
        }
        Ok(report)
    }
}

pub(crate) fn device_is_member(conversations: &[Conversation], conversation: &str, user: &str) -> bool {
    conversations.iter().any(|candidate| {
        candidate.id == conversation && candidate.members.iter().any(|member| member == user)
    })
}

async fn create_conversations(
    system: &ProcessSystem,
    users: &[String],
    plan: &ChaosPlan,
) -> anyhow::Result<Vec<Conversation>> {
    let mut conversations = Vec::new();
    for group in 0..plan.groups {
        let mut members: Vec<String> = (0..plan.group_size)
            .map(|offset| users[(group * plan.group_size + offset) % users.len()].clone())
            .collect();
        if plan.offline_member_per_group {
            members.push(offline_member(group));
        }
        let others: Vec<&str> = members[1..].iter().map(String::as_str).collect();
        let created = system
            .api(group % system.gateways.len(), &members[0])
            .create_group(&format!("chaos {group}"), &others)
            .await?;
        conversations.push(Conversation {
            id: created.id,
            members,
        });
    }
    for (number, user) in users.iter().enumerate() {
        let neighbour = &users[(number + 1) % users.len()];
        let created = system
            .api(number % system.gateways.len(), user)
            .create_direct(neighbour)
            .await?;
        conversations.push(Conversation {
            id: created.id,
            members: vec![user.clone(), neighbour.clone()],
        });
    }
    Ok(conversations)
}

/// The member of group `group` who never connects (with `offline_member_per_group`).
pub fn offline_member(group: usize) -> String {
    format!("off{group}")
}

/// Every stored message of a conversation as (seq, client_msg_id), read through gateway 0.
async fn stored_history(
    system: &ProcessSystem,
    conversation: &Conversation,
) -> anyhow::Result<Vec<(u64, String)>> {
    let mut stored = Vec::new();
    loop {
        let after = stored.last().map_or(0, |(seq, _)| *seq);
        let page = system
            .api(0, &conversation.members[0])
            .history(&conversation.id, &format!("after={after}&limit=200"))
            .await?;
        stored.extend(
            page.messages
                .iter()
                .map(|message| (message.seq, message.client_msg_id.clone())),
        );
        if !page.has_more || page.messages.is_empty() {
            return Ok(stored);
        }
    }
}

/// Connects `device` to the first gateway that takes it, starting at `gateway` and moving on after each failure.
async fn connect_somewhere(
    device: &mut ChaosDevice,
    urls: &[String],
    gateway: &mut usize,
    give_up: &CancellationToken,
) -> anyhow::Result<()> {
    let mut last_error = None;
    for _ in 0..urls.len() * 100 {
        if give_up.is_cancelled() {
            break;
        }
        match device.connect(&urls[*gateway], CONNECT_TIMEOUT).await {
            Ok(()) => return Ok(()),
            Err(error) => last_error = Some(error),
        }
        *gateway = (*gateway + 1) % urls.len();
        tokio::time::sleep(RETRY_PAUSE).await;
    }
    Err(last_error.unwrap_or_else(|| anyhow::anyhow!("gave up"))).with_context(|| {
        format!(
            "{}/{} found no gateway to connect to",
            device.user, device.device
        )
    })
}

struct Sends {
    conversations: Vec<String>,
    interval: Duration,
}

/// One device's life during the run: stay connected (moving to another gateway when one goes), and send if it is a sender.
struct DeviceRun {
    device: ChaosDevice,
    urls: Arc<Vec<String>>,
    gateway: usize,
    sends: Option<Sends>,
    stop: CancellationToken,
    give_up: CancellationToken,
    ledger: Arc<Mutex<Ledger>>,
}

impl DeviceRun {
    async fn run(mut self) -> ChaosDevice {
        let mut sent = 0usize;
        let mut ticker = tokio::time::interval(
            self.sends
                .as_ref()
                .map_or(Duration::from_secs(3600), |sends| sends.interval),
        );
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if !self.ensure_connected().await {
                break;
            }
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = self.device.disconnected() => continue,
                _ = ticker.tick(), if self.sends.is_some() => {}
            }
            let sends = self.sends.as_ref().expect("only senders tick");
            let conversation = sends.conversations[sent % sends.conversations.len()].clone();
            let client_msg_id = format!("{}-{sent}", self.device.user);
            self.send_until_acked(&conversation, &client_msg_id).await;
            sent += 1;
        }
        self.device
    }

    /// Reconnects (anywhere) if the socket is gone; false if no gateway took the device before giving up.
    async fn ensure_connected(&mut self) -> bool {
        self.device.is_connected() || connect_somewhere(&mut self.device, &self.urls, &mut self.gateway, &self.give_up).await.is_ok()
    }

    /// The same client_msg_id until acked: a retry after a lost ack must not store the message twice.
    async fn send_until_acked(&mut self, conversation: &str, client_msg_id: &str) {
        let text = format!("chaos {}", search_token(client_msg_id));
        let mut first_failure: Option<Instant> = None;
        loop {
            if self.give_up.is_cancelled() {
                self.ledger
                    .lock()
                    .expect("ledger lock")
                    .abandoned
                    .push(client_msg_id.to_owned());
                return;
            }
            if !self.ensure_connected().await {
                continue;
            }
            let attempt_started = Instant::now();
            match self
                .device
                .send_text(conversation, client_msg_id, &text, SEND_TIMEOUT)
                .await
            {
                Ok(seq) => {
                    let mut ledger = self.ledger.lock().expect("ledger lock");
                    ledger
                        .acked
                        .insert((conversation.to_owned(), seq), client_msg_id.to_owned());
                    if let Some(first_failure) = first_failure {
                        ledger.longest_send_failure =
                            ledger.longest_send_failure.max(first_failure.elapsed());
                    }
                    return;
                }
                Err(error) => {
                    first_failure.get_or_insert(attempt_started);
                    self.ledger
                        .lock()
                        .expect("ledger lock")
                        .count_failure(&error);
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }
}

/// The one word of a chaos message's text that no other message has, for finding it in search.
pub fn search_token(client_msg_id: &str) -> String {
    client_msg_id.replace('-', "x")
}

/// A short label for a failed attempt: the error code, or what happened to the socket.
fn failure_kind(error: &anyhow::Error) -> String {
    let text = format!("{error:#}");
    if let Some(code) = text.strip_prefix("send refused: ") {
        return code
            .split_whitespace()
            .next()
            .unwrap_or("refused")
            .to_lowercase();
    }
    if text.contains("no reply in time") {
        return "timeout".to_owned();
    }
    "socket ended".to_owned()
}
