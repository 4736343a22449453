//! The capacity scenario: the highest send rate whose p99 end-to-end latency stays within the SLO for a whole measured window, found by doubling, then bisecting.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::load_session::{LoadSession, System};
use crate::report::PhaseReport;
use crate::scenario_latency::LatencyOptions;
use crate::system_under_test::Target;
use crate::worker_pool::CombinedProgress;

#[derive(Debug, Clone)]
pub struct CapacityOptions {
    /// Population, workers and the phase timing (warm-up, measured window, drain) of every probe; `rates` and `repeats` are not used.
    pub timetable: LatencyOptions,
    /// A probe passes when the p99 of due time → `message` frame stays at or under this.
    pub slo_p99_ms: f64,
    /// And, when set, the p99 of due time → ack too: a system that delivers fast but acks late is not keeping up.
    pub ack_slo_p99_ms: Option<f64>,
    pub start_rate: f64,
    /// Doubling stops here; a pass at this rate ends the search with "at least this".
    pub max_rate: f64,
    /// Below this a failing start is not halved further.
    pub min_rate: f64,
    /// Bisection stops once (first fail − last pass) / last pass is at most this.
    pub resolution: f64,
    /// Probes per system, whatever the search still wants: keeps a run bounded in time.
    pub max_probes: usize,
    /// A probe is given up as soon as acks lag by more than this many SLOs (median ack, or unacked sends' worth of time).
    pub backlog_slo_multiple: f64,
}

impl CapacityOptions {
    /// The shape: 1,000 clients in 100 groups of 10, p99 ≤ 150 ms over 60 s windows, starting at 500 sends/s.
    pub fn full() -> CapacityOptions {
        let mut timetable = LatencyOptions::full();
        timetable.measure_seconds = 60.0;
        timetable.baseline = false;
        CapacityOptions { timetable, slo_p99_ms: 150.0, ack_slo_p99_ms: None, start_rate: 500.0, max_rate: 50_000.0, min_rate: 10.0, resolution: 0.1, max_probes: 10, backlog_slo_multiple: 10.0 }
    }

    /// 50 clients, short probes and a generous SLO: proves the search, the early stop and the report work.
    pub fn smoke() -> CapacityOptions {
        let mut timetable = LatencyOptions::smoke();
        timetable.measure_seconds = 1.0;
        timetable.warmup_seconds = 0.3;
        timetable.drain_seconds = 2.0;
        timetable.phase_lead_time = std::time::Duration::from_millis(300);
        timetable.settle_quiet_period = std::time::Duration::from_millis(300);
        timetable.baseline = false;
        CapacityOptions { timetable, slo_p99_ms: 1000.0, ack_slo_p99_ms: None, start_rate: 50.0, max_rate: 100.0, min_rate: 10.0, resolution: 0.1, max_probes: 3, backlog_slo_multiple: 10.0 }
    }
}

/// One probe: a rate, held for the measured window (or until it was clearly lost), and its verdict.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Probe {
    pub system: String,
    pub rate_per_second: f64,
    pub passed: bool,
    /// Why it passed or failed, in words.
    pub verdict: String,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub ack_p50_ms: f64,
    #[serde(default)]
    pub ack_p99_ms: f64,
    /// Sends acked per second of the measured window: what the system actually took, whatever was offered.
    #[serde(default)]
    pub acks_per_second: f64,
    pub deliveries: u64,
    pub missing_deliveries: u64,
    pub errors: u64,
}

/// One system's search and its answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CapacitySearch {
    pub system: String,
    pub probes: Vec<Probe>,
    /// The highest rate that passed; `None` when even the lowest probed rate failed.
    pub capacity_per_second: Option<f64>,
    /// The lowest rate that failed above it; `None` when the search stopped at `max_rate` or `max_probes` still passing.
    pub first_failing_per_second: Option<f64>,
    /// True when the answer is within the resolution (a failing rate sits just above it).
    pub resolved: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CapacityReport {
    pub slo_p99_ms: f64,
    pub measure_seconds: f64,
    pub resolution: f64,
    pub searches: Vec<CapacitySearch>,
}

impl CapacityReport {
    pub fn markdown(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "Capacity: highest sends/s with p99 (due time → `message` frame at each recipient) ≤ {} ms over a {} s window; bisection to {:.0} %.\n",
            self.slo_p99_ms,
            self.measure_seconds,
            self.resolution * 100.0
        );
        let _ = writeln!(text, "| system | capacity sends/s | first failing sends/s | resolved | probes |");
        let _ = writeln!(text, "|---|---:|---:|---|---:|");
        for search in &self.searches {
            let capacity = search.capacity_per_second.map_or("below the lowest probe".to_owned(), |rate| format!("{rate:.0}"));
            let failing = search.first_failing_per_second.map_or("—".to_owned(), |rate| format!("{rate:.0}"));
            let _ = writeln!(text, "| {} | {capacity} | {failing} | {} | {} |", search.system, if search.resolved { "yes" } else { "no" }, search.probes.len());
        }
        let _ = writeln!(text, "\nEvery probe, in order:\n");
        let _ = writeln!(text, "| system | sends/s | passed | p50 ms | p99 ms | ack p50 ms | ack p99 ms | acks/s | deliveries | missing | errors | verdict |");
        let _ = writeln!(text, "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        for probe in self.searches.iter().flat_map(|search| &search.probes) {
            let _ = writeln!(
                text,
                "| {} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {} | {} | {} | {} |",
                probe.system,
                probe.rate_per_second,
                if probe.passed { "yes" } else { "**no**" },
                probe.p50_ms,
                probe.p99_ms,
                probe.ack_p50_ms,
                probe.ack_p99_ms,
                probe.acks_per_second,
                probe.deliveries,
                probe.missing_deliveries,
                probe.errors,
                probe.verdict
            );
        }
        text
    }
}

/// The next rate to probe from the highest pass and the lowest fail so far; `None` when the search is done.
///
/// Double from the start while it passes (up to `max_rate`); halve while the start fails (down to
/// `min_rate`); once both a pass and a fail are known, bisect until they are within `resolution`.
pub fn next_rate(last_pass: Option<f64>, first_fail: Option<f64>, options: &CapacityOptions) -> Option<f64> {
    let next = match (last_pass, first_fail) {
        (None, None) => options.start_rate,
        (Some(pass), None) if pass >= options.max_rate => return None,
        (Some(pass), None) => (pass * 2.0).min(options.max_rate),
        (None, Some(fail)) if fail / 2.0 < options.min_rate => return None,
        (None, Some(fail)) => fail / 2.0,
        (Some(pass), Some(fail)) if (fail - pass) / pass <= options.resolution => return None,
        (Some(pass), Some(fail)) => (pass + fail) / 2.0,
    };
    Some(next.round().max(1.0))
}

/// Sets up once, searches Natter (and the baseline, when asked), and returns every probe's phase and the answers.
pub async fn run_capacity(target: &Target, options: &CapacityOptions) -> anyhow::Result<(Vec<PhaseReport>, CapacityReport)> {
    let mut session = LoadSession::start(target, &options.timetable.session_options()).await?;
    let mut systems = vec![System::Natter];
    if session.has_baseline() {
        systems.push(System::Baseline);
    }
    let mut phases = Vec::new();
    let mut searches = Vec::new();
    for system in systems {
        match search(&mut session, system, options, &mut phases).await {
            Ok(found) => searches.push(found),
            Err(error) => {
                session.shut_down().await;
                return Err(error);
            }
        }
    }
    session.shut_down().await;
    let report = CapacityReport { slo_p99_ms: options.slo_p99_ms, measure_seconds: options.timetable.measure_seconds, resolution: options.resolution, searches };
    Ok((phases, report))
}

async fn search(session: &mut LoadSession, system: System, options: &CapacityOptions, phases: &mut Vec<PhaseReport>) -> anyhow::Result<CapacitySearch> {
    let mut last_pass: Option<f64> = None;
    let mut first_fail: Option<f64> = None;
    let mut probes = Vec::new();
    while probes.len() < options.max_probes {
        let Some(rate) = next_rate(last_pass, first_fail, options) else { break };
        // Rounding can land the midpoint on a rate already probed: then the search is as fine as whole sends/s allow.
        if Some(rate) == last_pass || Some(rate) == first_fail {
            break;
        }
        eprintln!("capacity: {} probe {} at {rate} sends/s ({} s measured)", system.name(), probes.len() + 1, options.timetable.measure_seconds);
        let report = session.run_phase(system, options.timetable.phase_shape(rate), stop_when_backlogged(rate, options)).await?;
        let probe = judge(&report, options.slo_p99_ms, options.ack_slo_p99_ms);
        eprintln!("capacity: {} at {rate} sends/s: {}", system.name(), probe.verdict);
        if probe.passed {
            last_pass = Some(last_pass.map_or(rate, |pass| pass.max(rate)));
        } else {
            first_fail = Some(first_fail.map_or(rate, |fail| fail.min(rate)));
        }
        probes.push(probe);
        phases.push(report);
    }
    let resolved = matches!((last_pass, first_fail), (Some(pass), Some(fail)) if (fail - pass) / pass <= options.resolution + 1e-9 || fail - pass <= 1.0);
    Ok(CapacitySearch { system: system.name().to_owned(), probes, capacity_per_second: last_pass, first_failing_per_second: first_fail, resolved })
}

/// Gives a probe up once acks lag by more than `backlog_slo_multiple` SLOs: the p99 cannot come back under the SLO from there.
fn stop_when_backlogged(rate: f64, options: &CapacityOptions) -> impl FnMut(&CombinedProgress) -> Option<String> + use<> {
    let limit_ms = options.slo_p99_ms * options.backlog_slo_multiple;
    move |progress: &CombinedProgress| {
        if let Some(ack_p50_ms) = progress.recent_ack_p50_ms
            && ack_p50_ms > limit_ms
        {
            return Some(format!("median ack over the last second {ack_p50_ms:.0} ms > {limit_ms:.0} ms"));
        }
        // Acks that stop coming altogether leave no median to judge: count what is outstanding instead.
        let unacked = progress.sends_made.saturating_sub(progress.acks_seen);
        let unacked_ms = unacked as f64 * 1000.0 / rate;
        (unacked_ms > limit_ms).then(|| format!("{unacked} sends unacked = {unacked_ms:.0} ms of sending > {limit_ms:.0} ms"))
    }
}

fn judge(report: &PhaseReport, slo_p99_ms: f64, ack_slo_p99_ms: Option<f64>) -> Probe {
    let (passed, verdict) = if let Some(reason) = &report.stopped_early {
        (false, format!("stopped early: {reason}"))
    } else if report.deliveries == 0 {
        (false, "nothing delivered".to_owned())
    } else if report.missing_deliveries > 0 {
        (false, format!("{} deliveries missing at the deadline", report.missing_deliveries))
    } else if report.errors > 0 {
        (false, format!("{} errors, first: {}", report.errors, report.first_error.clone().unwrap_or_default()))
    } else if report.latency_ms.p99 > slo_p99_ms {
        (false, format!("p99 {:.1} ms > {slo_p99_ms} ms", report.latency_ms.p99))
    } else if let Some(ack_slo) = ack_slo_p99_ms
        && report.ack_ms.p99 > ack_slo
    {
        (false, format!("ack p99 {:.1} ms > {ack_slo} ms", report.ack_ms.p99))
    } else {
        (true, format!("p99 {:.1} ms ≤ {slo_p99_ms} ms", report.latency_ms.p99))
    };
    Probe {
        system: report.system.clone(),
        rate_per_second: report.rate_per_second,
        passed,
        verdict,
        p50_ms: report.latency_ms.p50,
        p99_ms: report.latency_ms.p99,
        ack_p50_ms: report.ack_ms.p50,
        ack_p99_ms: report.ack_ms.p99,
        acks_per_second: report.acks_per_second,
        deliveries: report.deliveries,
        missing_deliveries: report.missing_deliveries,
        errors: report.errors,
    }
}

#[cfg(test)]
mod tests {
    use super::{CapacityOptions, next_rate};

    /// (highest pass, lowest fail) → next probe, with start 500, max 50,000, min 10, resolution 10 %.
    fn check(last_pass: Option<f64>, first_fail: Option<f64>, expected: Option<f64>) {
        let options = CapacityOptions::full();
        assert_eq!(next_rate(last_pass, first_fail, &options), expected, "pass {last_pass:?}, fail {first_fail:?}");
    }

    #[test]
    fn the_search_doubles_then_bisects_to_the_resolution() {
        check(None, None, Some(500.0));
        check(Some(500.0), None, Some(1000.0));
        check(Some(40_000.0), None, Some(50_000.0));
        check(Some(50_000.0), None, None);
        check(None, Some(500.0), Some(250.0));
        check(None, Some(15.0), None);
        check(Some(1000.0), Some(2000.0), Some(1500.0));
        check(Some(1500.0), Some(1750.0), Some(1625.0));
        check(Some(1625.0), Some(1750.0), None);
    }
}
