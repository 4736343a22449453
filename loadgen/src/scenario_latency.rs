//! The latency scenario: groups of clients sending on a fixed timetable at each rate, Natter and the raw-NATS baseline in turn.

use std::time::Duration;

pub use crate::load_session::WorkerMode;
use crate::load_session::{LoadSession, PhaseShape, SessionOptions, System};
use crate::plan::Population;
use crate::report::PhaseReport;
use crate::system_under_test::Target;

#[derive(Debug, Clone)]
pub struct LatencyOptions {
    pub population: Population,
    pub rates: Vec<f64>,
    pub warmup_seconds: f64,
    pub measure_seconds: f64,
    pub drain_seconds: f64,
    pub repeats: usize,
    pub client_workers: usize,
    /// Clients bind 127.0.0.1 … 127.0.0.<n> as their source address, round robin.
    pub source_addresses: usize,
    pub baseline: bool,
    pub baseline_layout: crate::baseline::BaselineLayout,
    pub worker_mode: WorkerMode,
    /// Members named when a group is created; the rest are added afterwards (see `SessionOptions`).
    pub members_at_creation: usize,
    pub phase_lead_time: Duration,
    pub settle_quiet_period: Duration,
}

impl LatencyOptions {
    /// 1,000 clients in 100 groups of 10, 500 / 2,000 / 5,000 sends/s, 20 s windows after 5 s of warm-up.
    pub fn full() -> LatencyOptions {
        LatencyOptions {
            population: Population { groups: 100, group_size: 10 },
            rates: vec![500.0, 2000.0, 5000.0],
            warmup_seconds: 5.0,
            measure_seconds: 20.0,
            drain_seconds: 5.0,
            repeats: 1,
            client_workers: 4,
            source_addresses: 4,
            baseline: true,
            baseline_layout: crate::baseline::BaselineLayout::default(),
            worker_mode: WorkerMode::InProcess,
            members_at_creation: crate::system_under_test::MAX_MEMBERS_AT_CREATION,
            phase_lead_time: Duration::from_millis(1500),
            settle_quiet_period: Duration::from_secs(1),
        }
    }

    /// 50 clients, 5 groups, one short phase: enough to prove the harness works end to end.
    pub fn smoke() -> LatencyOptions {
        LatencyOptions {
            population: Population { groups: 5, group_size: 10 },
            rates: vec![100.0],
            warmup_seconds: 0.5,
            measure_seconds: 2.0,
            drain_seconds: 3.0,
            repeats: 1,
            client_workers: 2,
            source_addresses: 2,
            ..LatencyOptions::full()
        }
    }

    /// The session these options describe (who connects, how phases are paced).
    pub fn session_options(&self) -> SessionOptions {
        SessionOptions {
            population: self.population,
            client_workers: self.client_workers.max(1),
            source_addresses: self.source_addresses.max(1),
            baseline: self.baseline,
            baseline_layout: self.baseline_layout,
            worker_mode: self.worker_mode.clone(),
            members_at_creation: self.members_at_creation,
            phase_lead_time: self.phase_lead_time,
            settle_quiet_period: self.settle_quiet_period,
        }
    }

    pub fn phase_shape(&self, rate_per_second: f64) -> PhaseShape {
        PhaseShape { rate_per_second, warmup_seconds: self.warmup_seconds, measure_seconds: self.measure_seconds, drain_seconds: self.drain_seconds }
    }
}

/// Sets everything up, runs every (repeat, rate, system) phase, and returns one report per phase.
pub async fn run_latency(target: &Target, options: &LatencyOptions) -> anyhow::Result<Vec<PhaseReport>> {
    let mut session = LoadSession::start(target, &options.session_options()).await?;
    let mut systems = vec![System::Natter];
    if options.baseline {
        systems.push(System::Baseline);
    }
    let mut reports = Vec::new();
    for repeat in 0..options.repeats {
        for &rate in &options.rates {
            for &system in &systems {
                eprintln!("run: {} at {rate} sends/s ({} s warm-up, {} s measured), repeat {}/{}", system.name(), options.warmup_seconds, options.measure_seconds, repeat + 1, options.repeats);
                let outcome = session.run_phase(system, options.phase_shape(rate), |_| None).await;
                match outcome {
                    Ok(report) => reports.push(report),
                    Err(error) => {
                        session.shut_down().await;
                        return Err(error);
                    }
                }
            }
        }
    }
    session.shut_down().await;
    Ok(reports)
}
