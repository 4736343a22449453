//! CPU and memory of the processes under load, read from /proc while a phase's measured window runs.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Linux reports CPU time in clock ticks of USER_HZ, which is 100 on every mainstream architecture.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;
/// How often peak RSS is sampled inside the window.
const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessUsage {
    pub name: String,
    pub pid: u32,
    /// Average over the window; 100 = one core busy.
    pub cpu_percent: f64,
    /// Highest resident set seen in the window.
    pub peak_rss_mib: f64,
}

/// utime + stime in ticks: fields 14 and 15 of /proc/<pid>/stat, counted after the `)` ending the name.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// VmRSS from /proc/<pid>/status, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Waits for the window `[start, end)` (unix nanos) and measures each process across it.
pub async fn measure_window(processes: Vec<(String, u32)>, start_unix_nanos: u64, end_unix_nanos: u64) -> Vec<ProcessUsage> {
    crate::clock::sleep_until_unix(start_unix_nanos).await;
    let started = std::time::Instant::now();
    let ticks_at_start: Vec<Option<u64>> = processes.iter().map(|(_, pid)| cpu_ticks(*pid)).collect();
    let mut peak_rss: Vec<u64> = processes.iter().map(|(_, pid)| rss_kib(*pid).unwrap_or(0)).collect();
    let end = crate::clock::tokio_instant_at(end_unix_nanos);
    while tokio::time::Instant::now() < end {
        tokio::time::sleep(RSS_SAMPLE_INTERVAL.min(end.saturating_duration_since(tokio::time::Instant::now()))).await;
        for (peak, (_, pid)) in peak_rss.iter_mut().zip(&processes) {
            *peak = (*peak).max(rss_kib(*pid).unwrap_or(0));
        }
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-3);
    processes
        .into_iter()
        .zip(ticks_at_start)
        .zip(peak_rss)
        .map(|(((name, pid), ticks_at_start), peak_rss)| {
            let used = match (ticks_at_start, cpu_ticks(pid)) {
                (Some(before), Some(after)) => (after.saturating_sub(before)) as f64 / CLOCK_TICKS_PER_SECOND,
                _ => 0.0,
            };
            ProcessUsage { name, pid, cpu_percent: 100.0 * used / elapsed, peak_rss_mib: peak_rss as f64 / 1024.0 }
        })
        .collect()
}
