//! Who is who in a run: users, groups, which client makes send `i`, and the messages the coordinator and its workers exchange.
//!
//! Every process derives the same answers from the same few numbers, so a recipient can tell from a
//! `client_msg_id` alone which send it is looking at and when that send was due.

use serde::{Deserialize, Serialize};

/// The population of one run: `groups` groups of `group_size` members each, one device per member.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Population {
    pub groups: usize,
    pub group_size: usize,
}

impl Population {
    pub fn clients(&self) -> usize {
        self.groups * self.group_size
    }

    /// The client that makes send `index`: groups take turns, and within a group the members take turns.
    pub fn sender_of(&self, index: u64) -> usize {
        let group = (index % self.groups as u64) as usize;
        let member = ((index / self.groups as u64) % self.group_size as u64) as usize;
        group * self.group_size + member
    }

    pub fn group_of(&self, client: usize) -> usize {
        client / self.group_size
    }

    pub fn members_of(&self, group: usize) -> std::ops::Range<usize> {
        group * self.group_size..(group + 1) * self.group_size
    }
}

/// A user id; the prefix keeps load-generator users apart from anyone else's on a shared system.
pub fn user_name(client: usize) -> String {
    format!("lg{client}")
}

pub fn device_name(client: usize) -> String {
    format!("lgd{client}")
}

/// `<phase tag>-<send index>`: ids are `[A-Za-z0-9_-]`, and the tag keeps phases apart.
pub fn client_msg_id(phase_tag: &str, index: u64) -> String {
    format!("{phase_tag}-{index}")
}

/// The send index inside a `client_msg_id` of the given phase; `None` for anything else.
pub fn send_index_of(phase_tag: &str, client_msg_id: &str) -> Option<u64> {
    client_msg_id.strip_prefix(phase_tag)?.strip_prefix('-')?.parse().ok()
}

/// One measured phase: sends `0..total_sends()` on a fixed timetable from `epoch_unix_nanos`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Phase {
    pub tag: String,
    pub epoch_unix_nanos: u64,
    pub rate_per_second: f64,
    pub warmup_seconds: f64,
    pub measure_seconds: f64,
    /// After the last send, how long recipients keep waiting for stragglers before counting them missing.
    pub drain_seconds: f64,
    pub population: Population,
}

impl Phase {
    pub fn total_sends(&self) -> u64 {
        ((self.warmup_seconds + self.measure_seconds) * self.rate_per_second).round() as u64
    }

    /// Sends due inside the measured window (after the warm-up) count; the rest only load the system.
    pub fn is_measured(&self, index: u64) -> bool {
        let first_measured = (self.warmup_seconds * self.rate_per_second).round() as u64;
        index >= first_measured && index < self.total_sends()
    }

    pub fn measured_sends(&self) -> u64 {
        self.total_sends() - (self.warmup_seconds * self.rate_per_second).round() as u64
    }

    pub fn due_unix_nanos(&self, index: u64) -> u64 {
        crate::clock::due_unix_nanos(self.epoch_unix_nanos, self.rate_per_second, index)
    }

    pub fn end_of_sends_unix_nanos(&self) -> u64 {
        self.due_unix_nanos(self.total_sends())
    }

    pub fn measured_window_unix_nanos(&self) -> (u64, u64) {
        let start = self.epoch_unix_nanos + (self.warmup_seconds * 1e9) as u64;
        (start, self.end_of_sends_unix_nanos())
    }
}

/// One WebSocket client (or, in the baseline, one NATS subscriber) a worker runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientSpec {
    pub client: usize,
    pub user: String,
    pub device: String,
    /// The conversation this client sends to (its group's).
    pub conversation: String,
    /// `ws://host:port/v1/ws?token=…&device=…`, or empty in the baseline.
    pub ws_url: String,
    /// Local address the socket binds before connecting, spreading clients over 127.0.0.x.
    pub source_ip: String,
}

/// Coordinator → worker, one JSON object per line on the worker's stdin.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Connect these WebSocket clients; they send their share of every phase's sends.
    NatterClients { population: Population, clients: Vec<ClientSpec> },
    /// Subscribe these users to `bench.deliver.<user>` on raw NATS.
    BaselineSubscribers { population: Population, nats_url: String, clients: Vec<ClientSpec> },
    /// Publish every phase's sends to raw JetStream.
    BaselinePublisher {
        population: Population,
        #[serde(default)]
        layout: crate::baseline::BaselineLayout,
        nats_url: String,
    },
    /// Relay the raw stream to the members' delivery subjects until told to quit.
    BaselineFanout {
        population: Population,
        #[serde(default)]
        layout: crate::baseline::BaselineLayout,
        nats_url: String,
    },
    Run { phase: Phase },
    /// Stop the running phase now and report what was measured so far (a capacity probe that is already lost).
    AbortPhase,
    /// Open these idle WebSocket connections at a bounded rate and hold them.
    IdleConnections { plan: crate::idle_connections::IdleConnectionsPlan },
    /// Idle connections: send one `ping` frame on every connection and count the `pong`s.
    PingAll,
    Quit,
}

/// Worker → coordinator, one JSON object per line on the worker's stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Ready { connected: usize, failed: usize, first_error: Option<String> },
    Progress { progress: crate::recorder::ProgressSnapshot },
    /// Idle connections opened so far (sent once a second while connecting).
    ConnectProgress { connected: usize, failed: usize },
    /// The answer to `PingAll`: connections that answered, that stayed silent, and that the server had closed.
    Pinged { answered: usize, silent: usize, dropped: usize },
    PhaseDone { result: crate::recorder::WorkerPhaseResult },
    Failed { message: String },
}
