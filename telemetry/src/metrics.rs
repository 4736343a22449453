//! The process-wide metric families, each group registered the first time its role touches it, so a single-role binary exports only its own.
//!
//! One registry per process is the Prometheus model of a scrape target; `natter run` (every role in
//! one process) therefore exports every group from any of its `/metrics` endpoints. Recording is a
//! counter increment or a histogram observe on atomics; the registry lock is taken only to register
//! a group and to encode a scrape.

use std::sync::{LazyLock, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// What `/metrics` answers with; Prometheus negotiates OpenMetrics text by this type.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(|| Mutex::new(Registry::default()));

/// Seconds; 0.15 is a bucket edge so the design's p99 > 150 ms alert is read off a boundary, not interpolated across one.
const DELIVERY_LATENCY_BUCKETS: [f64; 14] = [0.002, 0.005, 0.01, 0.02, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Seconds; a PubAck on one node takes well under a millisecond, a replicated one a few.
const PUBLISH_ACK_LATENCY_BUCKETS: [f64; 12] = [0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

type Labels = [(&'static str, &'static str); 1];
type TwoLabels = [(&'static str, &'static str); 2];
type OwnedLabels = [(&'static str, String); 2];

fn register_group(register: impl FnOnce(&mut Registry)) {
    let mut registry = REGISTRY.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    register(&mut registry);
}

/// The text exposition of every group registered so far.
pub fn encode_metrics() -> String {
    let registry = REGISTRY.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut text = String::new();
    encode(&mut text, &registry).expect("writing into a String cannot fail");
    text
}

/// The gateway's connections, deliveries, refusals and presence.
pub struct GatewayMetrics {
    /// From the message's `sent_at` (stamped by the sending gateway just before its append) to the frame entering the device's socket queue.
    pub delivery_latency_seconds: Histogram,
    pub connections: Gauge,
    /// Multicast groups this gateway takes deliveries of (it holds a member of each).
    pub multicast_subscriptions: Gauge,
    /// Events (presence, typing, receipts) not queued because the device's queue was full.
    pub events_dropped: Counter,
    pub connects: Counter,
    pub disconnects: Counter,
    slow_consumer_disconnects: Family<Labels, Counter>,
    rate_limit_refusals: Family<Labels, Counter>,
    /// Unix time of the presence refresher's last successful round (every live entry's expiry renewed in Redis);
    /// `time() - this` is the staleness of the least recently refreshed entry this gateway owns.
    presence_last_refresh_timestamp_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl GatewayMetrics {
    /// Starts each reason's series at zero, so `rate()` and the dashboard see it before its first disconnect.
    pub fn declare_slow_consumer_reasons(&self, reasons: &[&'static str]) {
        for reason in reasons {
            let _ = self.slow_consumer_disconnects.get_or_create(&[("reason", reason)]);
        }
    }

    /// Starts each action's series at zero, so `rate()` and the dashboard see it before its first refusal.
    pub fn declare_rate_limited_actions(&self, actions: &[&'static str]) {
        for action in actions {
            let _ = self.rate_limit_refusals.get_or_create(&[("action", action)]);
        }
    }

    pub fn count_slow_consumer_disconnect(&self, reason: &'static str) {
        self.slow_consumer_disconnects.get_or_create(&[("reason", reason)]).inc();
    }

    pub fn count_rate_limit_refusal(&self, action: &'static str) {
        self.rate_limit_refusals.get_or_create(&[("action", action)]).inc();
    }

    pub fn record_presence_refresh(&self) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        self.presence_last_refresh_timestamp_seconds.set(now.as_secs_f64());
    }
}

static GATEWAY: LazyLock<GatewayMetrics> = LazyLock::new(|| {
    let metrics = GatewayMetrics {
        delivery_latency_seconds: Histogram::new(DELIVERY_LATENCY_BUCKETS),
        connections: Gauge::default(),
        multicast_subscriptions: Gauge::default(),
        events_dropped: Counter::default(),
        connects: Counter::default(),
        disconnects: Counter::default(),
        slow_consumer_disconnects: Family::default(),
        rate_limit_refusals: Family::default(),
        presence_last_refresh_timestamp_seconds: Gauge::default(),
    };
    register_group(|registry| {
        registry.register(
            "natter_delivery_latency_seconds",
            "Send (the message's sent_at) to the frame queued on the device's socket, per delivered frame",
            metrics.delivery_latency_seconds.clone(),
        );
        registry.register("natter_connections", "Open WebSocket connections on this gateway", metrics.connections.clone());
        registry.register("natter_connects", "WebSocket connections accepted", metrics.connects.clone());
        registry.register(
            "natter_events_dropped",
            "Presence, typing and receipt frames dropped because the device's queue was full (messages are never dropped)",
            metrics.events_dropped.clone(),
        );
        registry.register(
            "natter_multicast_subscriptions",
            "Multicast groups this gateway is subscribed to because it holds one of their members",
            metrics.multicast_subscriptions.clone(),
        );
        registry.register("natter_disconnects", "WebSocket connections ended, for any reason", metrics.disconnects.clone());
        registry.register(
            "natter_slow_consumer_disconnects",
            "Devices closed with 1013 because they fell behind, by reason",
            metrics.slow_consumer_disconnects.clone(),
        );
        registry.register("natter_rate_limit_refusals", "Requests refused by a rate limit, by action", metrics.rate_limit_refusals.clone());
        registry.register(
            "natter_presence_last_refresh_timestamp_seconds",
            "Unix time of the last successful presence refresh in Redis; time() minus this is the staleness of the oldest entry",
            metrics.presence_last_refresh_timestamp_seconds.clone(),
        );
    });
    metrics
});

pub fn gateway_metrics() -> &'static GatewayMetrics {
    &GATEWAY
}

/// The log append's JetStream round trip.
pub struct StoreMetrics {
    pub publish_ack_latency_seconds: Histogram,
}

static STORE: LazyLock<StoreMetrics> = LazyLock::new(|| {
    let metrics = StoreMetrics { publish_ack_latency_seconds: Histogram::new(PUBLISH_ACK_LATENCY_BUCKETS) };
    register_group(|registry| {
        registry.register(
            "natter_publish_ack_latency_seconds",
            "JetStream publish to PubAck for a log append, per attempt that got an answer",
            metrics.publish_ack_latency_seconds.clone(),
        );
    });
    metrics
});

pub fn store_metrics() -> &'static StoreMetrics {
    &STORE
}

/// The fanout's publishes: one per member (`per_user`) or one per message for a multicast group.
pub struct FanoutMetrics {
    publishes: Family<Labels, Counter>,
}

/// Every `path` label of `natter_fanout_publishes_total`.
pub const FANOUT_PATHS: [&str; 2] = ["per_user", "multicast"];

impl FanoutMetrics {
    pub fn count_publishes(&self, path: &'static str, count: u64) {
        self.publishes.get_or_create(&[("path", path)]).inc_by(count);
    }

    pub fn publishes(&self, path: &'static str) -> u64 {
        self.publishes.get_or_create(&[("path", path)]).get()
    }
}

static FANOUT: LazyLock<FanoutMetrics> = LazyLock::new(|| {
    let metrics = FanoutMetrics { publishes: Family::default() };
    for path in FANOUT_PATHS {
        let _ = metrics.publishes.get_or_create(&[("path", path)]);
    }
    register_group(|registry| {
        registry.register("natter_fanout_publishes", "Deliveries the fanout published: one per member, or one per message of a multicast group", metrics.publishes.clone());
    });
    metrics
});

pub fn fanout_metrics() -> &'static FanoutMetrics {
    &FANOUT
}

/// Durable worker consumers' backlog, sampled from consumer info.
pub struct ConsumerMetrics {
    pending: Family<OwnedLabels, Gauge>,
}

impl ConsumerMetrics {
    pub fn set_pending(&self, stream: &str, consumer: &str, pending: u64) {
        let labels = [("stream", stream.to_owned()), ("consumer", consumer.to_owned())];
        self.pending.get_or_create(&labels).set(i64::try_from(pending).unwrap_or(i64::MAX));
    }
}

static CONSUMERS: LazyLock<ConsumerMetrics> = LazyLock::new(|| {
    let metrics = ConsumerMetrics { pending: Family::default() };
    register_group(|registry| {
        registry.register(
            "natter_consumer_pending",
            "Messages in the stream not yet delivered to the consumer (num_pending), sampled periodically",
            metrics.pending.clone(),
        );
    });
    metrics
});

pub fn consumer_metrics() -> &'static ConsumerMetrics {
    &CONSUMERS
}

/// Push outcomes per provider.
pub struct PushOutcomeMetrics {
    outcomes: Family<TwoLabels, Counter>,
}

impl PushOutcomeMetrics {
    /// Starts a provider's series at zero for each outcome, so `rate()` sees them before the first push.
    pub fn declare_provider(&self, provider: &'static str, outcomes: &[&'static str]) {
        for outcome in outcomes {
            let _ = self.outcomes.get_or_create(&[("provider", provider), ("outcome", outcome)]);
        }
    }

    /// `outcome` is one of sent, failed, retried, dead_lettered, invalid_token.
    pub fn count(&self, provider: &'static str, outcome: &'static str) {
        self.outcomes.get_or_create(&[("provider", provider), ("outcome", outcome)]).inc();
    }
}

static PUSH: LazyLock<PushOutcomeMetrics> = LazyLock::new(|| {
    let metrics = PushOutcomeMetrics { outcomes: Family::default() };
    register_group(|registry| {
        registry.register(
            "natter_push_outcomes",
            "Push attempts and jobs by provider and outcome (sent, failed, retried, dead_lettered, invalid_token)",
            metrics.outcomes.clone(),
        );
    });
    metrics
});

pub fn push_metrics() -> &'static PushOutcomeMetrics {
    &PUSH
}

/// The search indexer's distance behind the log.
pub struct IndexerMetrics {
    /// Stream last sequence − the sequence the last commit reflects.
    pub index_lag_messages: Gauge,
    pub indexed_stream_seq: Gauge,
}

static INDEXER: LazyLock<IndexerMetrics> = LazyLock::new(|| {
    let metrics = IndexerMetrics { index_lag_messages: Gauge::default(), indexed_stream_seq: Gauge::default() };
    register_group(|registry| {
        registry.register(
            "natter_index_lag_messages",
            "Log entries not yet in a committed search index: stream last sequence minus indexed sequence",
            metrics.index_lag_messages.clone(),
        );
        registry.register("natter_indexed_stream_seq", "The log's stream sequence the last index commit reflects", metrics.indexed_stream_seq.clone());
    });
    metrics
});

pub fn indexer_metrics() -> &'static IndexerMetrics {
    &INDEXER
}
