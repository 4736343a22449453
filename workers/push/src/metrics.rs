//! Counters of push outcomes per provider, kept as atomics so every job task bumps them without a lock; `snapshot` is what an exporter reads.

use std::sync::atomic::{AtomicU64, Ordering};

use schemas::PushProvider;

/// One provider's counters.
#[derive(Debug, Default)]
pub struct ProviderCounters {
    /// Accepted by the provider.
    pub sent: AtomicU64,
    /// Attempts that did not deliver (each retried or dead-lettered attempt, and invalid tokens).
    pub failed: AtomicU64,
    /// Attempts handed back to JetStream for another try.
    pub retried: AtomicU64,
    /// Jobs that ended in the dead-letter stream.
    pub dead_lettered: AtomicU64,
    /// Registrations removed because the provider called the token invalid.
    pub invalid_tokens: AtomicU64,
}

/// What happened to one attempt or job; each bumps one counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    Sent,
    Failed,
    Retried,
    DeadLettered,
    InvalidToken,
}

impl PushOutcome {
    const ALL: [PushOutcome; 5] = [PushOutcome::Sent, PushOutcome::Failed, PushOutcome::Retried, PushOutcome::DeadLettered, PushOutcome::InvalidToken];

    /// The `outcome` label in `natter_push_outcomes_total`.
    pub fn label(self) -> &'static str {
        match self {
            PushOutcome::Sent => "sent",
            PushOutcome::Failed => "failed",
            PushOutcome::Retried => "retried",
            PushOutcome::DeadLettered => "dead_lettered",
            PushOutcome::InvalidToken => "invalid_token",
        }
    }
}

/// A copy of one provider's counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderMetricsSnapshot {
    pub provider: PushProvider,
    pub sent: u64,
    pub failed: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    pub invalid_tokens: u64,
}

/// Every provider's counters; share one `Arc<PushMetrics>` between the worker and whoever exports them.
#[derive(Debug, Default)]
pub struct PushMetrics {
    fcm: ProviderCounters,
    apns: ProviderCounters,
    webpush: ProviderCounters,
}

impl PushMetrics {
    pub fn provider(&self, provider: PushProvider) -> &ProviderCounters {
        match provider {
            PushProvider::Fcm => &self.fcm,
            PushProvider::Apns => &self.apns,
            PushProvider::Webpush => &self.webpush,
        }
    }

    /// Counts one outcome here and in the process's `natter_push_outcomes_total`.
    pub fn record(&self, provider: PushProvider, outcome: PushOutcome) {
        let counters = self.provider(provider);
        let counter = match outcome {
            PushOutcome::Sent => &counters.sent,
            PushOutcome::Failed => &counters.failed,
            PushOutcome::Retried => &counters.retried,
            PushOutcome::DeadLettered => &counters.dead_lettered,
            PushOutcome::InvalidToken => &counters.invalid_tokens,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        telemetry::push_metrics().count(provider.as_str(), outcome.label());
    }

    /// Every provider × outcome series at zero in `natter_push_outcomes_total`, before the first push.
    pub fn declare_series() {
        let labels: Vec<&'static str> = PushOutcome::ALL.iter().map(|outcome| outcome.label()).collect();
        for provider in PushProvider::ALL {
            telemetry::push_metrics().declare_provider(provider.as_str(), &labels);
        }
    }

    pub fn snapshot_of(&self, provider: PushProvider) -> ProviderMetricsSnapshot {
        let counters = self.provider(provider);
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ProviderMetricsSnapshot {
            provider,
            sent: read(&counters.sent),
            failed: read(&counters.failed),
            retried: read(&counters.retried),
            dead_lettered: read(&counters.dead_lettered),
            invalid_tokens: read(&counters.invalid_tokens),
        }
    }

    /// Every provider, in a fixed order (what a Prometheus exporter would walk).
    pub fn snapshot(&self) -> Vec<ProviderMetricsSnapshot> {
        PushProvider::ALL.into_iter().map(|provider| self.snapshot_of(provider)).collect()
    }
}
