//! Latency recording in one process, and the form in which a worker hands its histograms to the coordinator.

use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Microseconds; up to 10 minutes, 3 significant digits (0.1 % error) at any magnitude.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant bounds are valid")
}

/// A histogram as (value µs, count) pairs of its non-empty buckets, so it survives a JSON line.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HistogramPairs(pub Vec<(u64, u64)>);

impl HistogramPairs {
    pub fn from_histogram(histogram: &Histogram<u64>) -> HistogramPairs {
        HistogramPairs(histogram.iter_recorded().map(|bucket| (bucket.value_iterated_to(), bucket.count_at_value())).collect())
    }

    pub fn add_to(&self, histogram: &mut Histogram<u64>) {
        for &(value, count) in &self.0 {
            histogram.saturating_record_n(value, count);
        }
    }
}

/// What one worker saw in one phase. Only sends due in the measured window are counted here.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerPhaseResult {
    /// `message` frames at the sender's group-mates: due time → arrival.
    pub deliveries: HistogramPairs,
    /// `message` frames back at the sending device itself (the protocol echoes sends).
    pub own_echoes: HistogramPairs,
    /// Acks at the sender: due time → arrival of the ack.
    pub acks: HistogramPairs,
    pub sends: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// Every `message` frame of the phase, measured or not, for throughput.
    pub frames_received: u64,
}

/// Shared by a worker's client tasks; a plain mutex, held for a few hundred nanoseconds per sample.
pub struct Recorder {
    inner: Mutex<RecorderState>,
}

struct RecorderState {
    deliveries: Histogram<u64>,
    own_echoes: Histogram<u64>,
    acks: Histogram<u64>,
    sends: u64,
    errors: u64,
    first_error: Option<String>,
    frames_received: u64,
    /// Every send made and every ack seen in the phase, warm-up included: the coordinator's backlog check.
    sends_made: u64,
    acks_seen: u64,
    /// Acks since the last progress report, warm-up included, so a backlog shows within a second.
    recent_acks: Histogram<u64>,
}

/// What a worker tells the coordinator once a second while a phase runs.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ProgressSnapshot {
    /// Measured sends made so far.
    pub sent: u64,
    pub received: u64,
    /// All sends made and all acks seen in the phase so far (warm-up included).
    #[serde(default)]
    pub sends_made: u64,
    #[serde(default)]
    pub acks_seen: u64,
    /// Median due → ack of the acks seen since the previous snapshot; `None` when none came.
    #[serde(default)]
    pub recent_ack_p50_ms: Option<f64>,
}

pub enum Sample {
    Delivery,
    OwnEcho,
    Ack,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            inner: Mutex::new(RecorderState {
                deliveries: new_histogram(),
                own_echoes: new_histogram(),
                acks: new_histogram(),
                sends: 0,
                errors: 0,
                first_error: None,
                frames_received: 0,
                sends_made: 0,
                acks_seen: 0,
                recent_acks: new_histogram(),
            }),
        }
    }
}

impl Recorder {
    /// Records a latency in nanoseconds (clamped at 1 µs: the clock is shared, but not perfectly).
    pub fn record(&self, sample: Sample, latency_nanos: i64) {
        let micros = (latency_nanos / 1000).max(1) as u64;
        let mut state = self.inner.lock().expect("recorder lock is never poisoned");
        let histogram = match sample {
            Sample::Delivery => &mut state.deliveries,
            Sample::OwnEcho => &mut state.own_echoes,
            Sample::Ack => &mut state.acks,
        };
        histogram.saturating_record(micros);
    }

    pub fn count_frame(&self) {
        self.inner.lock().expect("recorder lock is never poisoned").frames_received += 1;
    }

    pub fn count_send(&self) {
        self.inner.lock().expect("recorder lock is never poisoned").sends += 1;
    }

    pub fn count_error(&self, what: impl FnOnce() -> String) {
        let mut state = self.inner.lock().expect("recorder lock is never poisoned");
        state.errors += 1;
        if state.first_error.is_none() {
            state.first_error = Some(what());
        }
    }

    /// Any send of the phase, measured or not, as it is handed to the socket.
    pub fn note_send_made(&self) {
        self.inner.lock().expect("recorder lock is never poisoned").sends_made += 1;
    }

    /// Any ack of the phase, measured or not: due time → ack, in nanoseconds.
    pub fn note_ack(&self, latency_nanos: i64) {
        let mut state = self.inner.lock().expect("recorder lock is never poisoned");
        state.acks_seen += 1;
        state.recent_acks.saturating_record((latency_nanos / 1000).max(1) as u64);
    }

    /// Counts so far and the median ack since the last call, for progress lines and the backlog check.
    pub fn progress(&self) -> ProgressSnapshot {
        let mut state = self.inner.lock().expect("recorder lock is never poisoned");
        let recent_ack_p50_ms = (!state.recent_acks.is_empty()).then(|| state.recent_acks.value_at_quantile(0.5) as f64 / 1000.0);
        state.recent_acks.reset();
        ProgressSnapshot { sent: state.sends, received: state.frames_received, sends_made: state.sends_made, acks_seen: state.acks_seen, recent_ack_p50_ms }
    }

    /// Measured `message` frames recorded so far (deliveries and own echoes), to tell when a phase has drained.
    pub fn measured_frames(&self) -> u64 {
        let state = self.inner.lock().expect("recorder lock is never poisoned");
        state.deliveries.len() + state.own_echoes.len()
    }

    pub fn acks_recorded(&self) -> u64 {
        self.inner.lock().expect("recorder lock is never poisoned").acks.len()
    }

    /// The phase's result; the recorder starts empty for the next phase.
    pub fn take(&self) -> WorkerPhaseResult {
        let mut state = self.inner.lock().expect("recorder lock is never poisoned");
        let result = WorkerPhaseResult {
            deliveries: HistogramPairs::from_histogram(&state.deliveries),
            own_echoes: HistogramPairs::from_histogram(&state.own_echoes),
            acks: HistogramPairs::from_histogram(&state.acks),
            sends: state.sends,
            errors: state.errors,
            first_error: state.first_error.take(),
            frames_received: state.frames_received,
        };
        state.deliveries.reset();
        state.own_echoes.reset();
        state.acks.reset();
        state.sends = 0;
        state.errors = 0;
        state.frames_received = 0;
        state.sends_made = 0;
        state.acks_seen = 0;
        state.recent_acks.reset();
        result
    }
}
