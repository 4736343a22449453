//! What a run found: per-phase figures merged from the workers, written as JSON, a Markdown table and an SVG percentile plot.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::plan::Phase;
use crate::recorder::{WorkerPhaseResult, new_histogram};
use crate::resources::ProcessUsage;

/// Milliseconds at the percentiles the report shows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

impl Percentiles {
    pub fn of(histogram: &Histogram<u64>) -> Percentiles {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Percentiles {
            count: histogram.len(),
            p50: ms(histogram.value_at_quantile(0.50)),
            p95: ms(histogram.value_at_quantile(0.95)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p99_9: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
    }
}

/// The percentiles the plot draws (x axis), up to 99.99.
const CURVE_PERCENTILES: [f64; 14] = [0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 97.5, 99.0, 99.5, 99.75, 99.9, 99.95, 99.975, 99.99];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseReport {
    /// `natter` or `baseline` (raw NATS).
    pub system: String,
    pub rate_per_second: f64,
    pub measure_seconds: f64,
    pub measured_sends: u64,
    pub sends_made: u64,
    /// Deliveries to the sender's group-mates (the sender's own echo is not in here).
    pub expected_deliveries: u64,
    pub deliveries: u64,
    pub missing_deliveries: u64,
    /// Due time → `message` frame at each group-mate.
    pub latency_ms: Percentiles,
    /// Due time → the echo of the send at the sending device.
    pub own_echo_ms: Percentiles,
    /// Due time → ack (Natter: the ack frame; baseline: JetStream's PubAck at the publisher).
    pub ack_ms: Percentiles,
    /// Every measured `message` frame (group-mates and echoes) per second of the window.
    pub frames_per_second: f64,
    pub acks_per_second: f64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub processes: Vec<ProcessUsage>,
    /// Appends per second to each JetStream stream during the window (the log and every KV bucket).
    #[serde(default)]
    pub stream_writes_per_second: Vec<(String, f64)>,
    /// (percentile, ms) points of the delivery latency distribution, for the plot.
    pub curve: Vec<(f64, f64)>,
    /// Why the phase was cut short (a capacity probe already lost), if it was; its figures cover only what ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_early: Option<String>,
}

impl PhaseReport {
    pub fn from_workers(system: &str, phase: &Phase, results: &[WorkerPhaseResult], processes: Vec<ProcessUsage>) -> PhaseReport {
        let mut deliveries = new_histogram();
        let mut own_echoes = new_histogram();
        let mut acks = new_histogram();
        let mut sends_made = 0;
        let mut errors = 0;
        let mut first_error = None;
        for result in results {
            result.deliveries.add_to(&mut deliveries);
            result.own_echoes.add_to(&mut own_echoes);
            result.acks.add_to(&mut acks);
            sends_made += result.sends;
            errors += result.errors;
            if first_error.is_none() {
                first_error = result.first_error.clone();
            }
        }
        let expected_deliveries = phase.measured_sends() * (phase.population.group_size as u64 - 1);
        let curve = if deliveries.is_empty() {
            Vec::new()
        } else {
            CURVE_PERCENTILES.iter().map(|&percentile| (percentile, deliveries.value_at_percentile(percentile) as f64 / 1000.0)).collect()
        };
        PhaseReport {
            system: system.to_owned(),
            rate_per_second: phase.rate_per_second,
            measure_seconds: phase.measure_seconds,
            measured_sends: phase.measured_sends(),
            sends_made,
            expected_deliveries,
            deliveries: deliveries.len(),
            missing_deliveries: expected_deliveries.saturating_sub(deliveries.len()),
            latency_ms: Percentiles::of(&deliveries),
            own_echo_ms: Percentiles::of(&own_echoes),
            ack_ms: Percentiles::of(&acks),
            frames_per_second: (deliveries.len() + own_echoes.len()) as f64 / phase.measure_seconds,
            acks_per_second: acks.len() as f64 / phase.measure_seconds,
            errors,
            first_error,
            processes,
            stream_writes_per_second: Vec::new(),
            curve,
            stopped_early: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub scenario: String,
    pub started_at: String,
    pub machine: String,
    pub command: String,
    pub clients: usize,
    pub groups: usize,
    pub group_size: usize,
    pub gateways: usize,
    pub fanouts: usize,
    pub workers: usize,
    pub phases: Vec<PhaseReport>,
    /// Other scenarios' figures (history, catch-up), free-form.
    #[serde(default)]
    pub extra: serde_json::Value,
    /// A scenario's own summary (the capacity search's probes and answer), shown before the phase tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary_markdown: Option<String>,
}

impl RunReport {
    fn baseline_for(&self, phase: &PhaseReport) -> Option<&PhaseReport> {
        self.phases.iter().find(|other| other.system == "baseline" && other.rate_per_second == phase.rate_per_second)
    }

    pub fn markdown(&self) -> String {
        let mut text = String::new();
        let population = if self.groups > 0 { format!("{} clients in {} groups of {}", self.clients, self.groups, self.group_size) } else { format!("{} clients", self.clients) };
        let _ = writeln!(text, "Scenario `{}`, {population}, {} gateway(s), {} fanout(s), {} client worker process(es).", self.scenario, self.gateways, self.fanouts, self.workers);
        let _ = writeln!(text, "Machine: {}. Started {}.\n", self.machine, self.started_at);
        let _ = writeln!(text, "Command: `{}`\n", self.command);
        if let Some(summary) = &self.summary_markdown {
            let _ = writeln!(text, "{summary}\n");
        }
        if self.phases.is_empty() {
            let _ = writeln!(text, "```json\n{}\n```", serde_json::to_string_pretty(&self.extra).unwrap_or_default());
            return text;
        }
        let _ = writeln!(text, "Latency = due time of the send → `message` frame at each of the other {} members (ms).\n", self.group_size.saturating_sub(1));
        let _ = writeln!(text, "| system | sends/s | window s | p50 | p95 | p99 | p99.9 | max | p99 × baseline | own echo p99 | ack p50 | ack p99 | frames/s | acks/s | missing | errors |");
        let _ = writeln!(text, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for phase in &self.phases {
            let ratio = match (phase.system.as_str(), self.baseline_for(phase)) {
                ("natter", Some(baseline)) if baseline.latency_ms.p99 > 0.0 => format!("{:.1}×", phase.latency_ms.p99 / baseline.latency_ms.p99),
                _ => "—".to_owned(),
            };
            let l = &phase.latency_ms;
            let _ = writeln!(
                text,
                "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {ratio} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} | {} | {} |",
                phase.system, phase.rate_per_second, phase.measure_seconds, l.p50, l.p95, l.p99, l.p99_9, l.max, phase.own_echo_ms.p99, phase.ack_ms.p50, phase.ack_ms.p99, phase.frames_per_second, phase.acks_per_second, phase.missing_deliveries, phase.errors
            );
        }
        let _ = writeln!(text, "\nCPU (100 % = one core, averaged over the window) and peak RSS per process:\n");
        let _ = writeln!(text, "| system | sends/s | process | CPU % | RSS MiB |");
        let _ = writeln!(text, "|---|---:|---|---:|---:|");
        for phase in &self.phases {
            for process in &phase.processes {
                let _ = writeln!(text, "| {} | {} | {} | {:.0} | {:.1} |", phase.system, phase.rate_per_second, process.name, process.cpu_percent, process.peak_rss_mib);
            }
        }
        let _ = writeln!(text, "\nJetStream appends per second during the window, per stream (KV buckets are `KV_<bucket>`):\n");
        let _ = writeln!(text, "| system | sends/s | stream | appends/s |");
        let _ = writeln!(text, "|---|---:|---|---:|");
        for phase in &self.phases {
            for (stream, rate) in &phase.stream_writes_per_second {
                let _ = writeln!(text, "| {} | {} | {stream} | {rate:.0} |", phase.system, phase.rate_per_second);
            }
        }
        let errors: Vec<String> = self.phases.iter().filter_map(|phase| phase.first_error.as_ref().map(|error| format!("* {} at {}/s: {error}", phase.system, phase.rate_per_second))).collect();
        if !errors.is_empty() {
            let _ = writeln!(text, "\nFirst error per phase:\n\n{}", errors.join("\n"));
        }
        if !self.extra.is_null() {
            let _ = writeln!(text, "\nOther figures:\n\n```json\n{}\n```", serde_json::to_string_pretty(&self.extra).unwrap_or_default());
        }
        text
    }

    /// Writes `report.json`, `report.md` and `latency.svg` into `directory`.
    pub fn write(&self, directory: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(directory).with_context(|| format!("failed to create {}", directory.display()))?;
        std::fs::write(directory.join("report.json"), serde_json::to_string_pretty(self)?)?;
        std::fs::write(directory.join("report.md"), self.markdown())?;
        if !self.phases.is_empty() {
            std::fs::write(directory.join("latency.svg"), crate::svg_plot::percentile_plot(&self.phases))?;
        }
        Ok(())
    }
}

/// `nproc`, kernel and CPU model, read from /proc so the report says where it was measured.
pub fn describe_machine() -> String {
    let cores = std::thread::available_parallelism().map(|cores| cores.get()).unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| info.lines().find(|line| line.starts_with("model name")).and_then(|line| line.split(':').nth(1)).map(|model| model.trim().to_owned()))
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), Linux {kernel}")
}
