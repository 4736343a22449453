//! The large-group scenario: one group of 2,000 connected members at 20 sends/s (40,000 deliveries/s), Natter then the raw-NATS baseline of the same shape.
//!
//! It is the latency scenario with one big group instead of many small ones, so it runs on the
//! same machinery (`load_session`); what it adds is the population, the members beyond the
//! 1,000 a group may name at creation (added afterwards over HTTP), and its target.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::plan::Population;
use crate::report::{Percentiles, PhaseReport};
use crate::scenario_latency::LatencyOptions;
use crate::system_under_test::Target;

/// Issue 4's target for this scenario: p99 end to end.
pub const TARGET_P99_MS: f64 = 50.0;

#[derive(Debug, Clone)]
pub struct LargeGroupOptions {
    /// Population (1 group), rate (one), phase timing, workers and the baseline switch.
    pub timetable: LatencyOptions,
}

impl LargeGroupOptions {
    /// One group of `members`, `rate` sends/s, 5 s warm-up and a 20 s measured window.
    pub fn full(members: usize, rate: f64) -> LargeGroupOptions {
        let mut timetable = LatencyOptions::full();
        timetable.population = Population { groups: 1, group_size: members.max(2) };
        timetable.rates = vec![rate];
        LargeGroupOptions { timetable }
    }

    /// 40 members (30 of them added after creation, to exercise that path), 20 sends/s for 2 s.
    pub fn smoke() -> LargeGroupOptions {
        let mut timetable = LatencyOptions::smoke();
        timetable.population = Population { groups: 1, group_size: 40 };
        timetable.rates = vec![20.0];
        timetable.warmup_seconds = 0.5;
        timetable.measure_seconds = 2.0;
        timetable.drain_seconds = 2.0;
        timetable.members_at_creation = 9;
        timetable.phase_lead_time = std::time::Duration::from_millis(500);
        timetable.settle_quiet_period = std::time::Duration::from_millis(300);
        LargeGroupOptions { timetable }
    }
}

/// The answer per system, beside the full phase reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LargeGroupReport {
    pub members: usize,
    pub rate_per_second: f64,
    pub deliveries_per_second_expected: f64,
    pub target_p99_ms: f64,
    pub natter: Option<Percentiles>,
    pub baseline: Option<Percentiles>,
    /// Natter's p99 within the target, with nothing missing and no errors.
    pub target_met: bool,
}

impl LargeGroupReport {
    pub fn markdown(&self, phases: &[PhaseReport]) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "One group of {} members, {} sends/s ({:.0} deliveries/s to the other members). Target: Natter p99 ≤ {} ms — **{}**.\n",
            self.members,
            self.rate_per_second,
            self.deliveries_per_second_expected,
            self.target_p99_ms,
            if self.target_met { "met" } else { "missed" }
        );
        let _ = writeln!(text, "| system | p50 ms | p95 ms | p99 ms | p99.9 ms | max ms | p99 × baseline | deliveries | missing | errors |");
        let _ = writeln!(text, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let baseline_p99 = self.baseline.as_ref().map(|baseline| baseline.p99).filter(|p99| *p99 > 0.0);
        for phase in phases {
            let l = &phase.latency_ms;
            let ratio = match (phase.system.as_str(), baseline_p99) {
                ("natter", Some(baseline_p99)) => format!("{:.1}×", l.p99 / baseline_p99),
                _ => "—".to_owned(),
            };
            let _ = writeln!(
                text,
                "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {ratio} | {} | {} | {} |",
                phase.system, l.p50, l.p95, l.p99, l.p99_9, l.max, phase.deliveries, phase.missing_deliveries, phase.errors
            );
        }
        text
    }
}

pub async fn run_large_group(target: &Target, options: &LargeGroupOptions) -> anyhow::Result<(Vec<PhaseReport>, LargeGroupReport)> {
    let timetable = &options.timetable;
    let members = timetable.population.group_size;
    let rate = timetable.rates.first().copied().unwrap_or(20.0);
    let phases = crate::scenario_latency::run_latency(target, timetable).await?;
    let of = |system: &str| phases.iter().find(|phase| phase.system == system);
    let natter = of("natter");
    let target_met = natter.is_some_and(|natter| natter.deliveries > 0 && natter.missing_deliveries == 0 && natter.errors == 0 && natter.latency_ms.p99 <= TARGET_P99_MS);
    let report = LargeGroupReport {
        members,
        rate_per_second: rate,
        deliveries_per_second_expected: rate * (members - 1) as f64,
        target_p99_ms: TARGET_P99_MS,
        natter: natter.map(|phase| phase.latency_ms.clone()),
        baseline: of("baseline").map(|phase| phase.latency_ms.clone()),
        target_met,
    };
    Ok((phases, report))
}
