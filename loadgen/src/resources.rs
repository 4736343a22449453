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

/// (busy, total) jiffies over all cores from the first line of /proc/stat; idle and iowait count as not busy.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let numbers: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|field| field.parse().ok()).collect();
    let total: u64 = numbers.iter().take(8).sum();
    let idle = numbers.get(3)? + numbers.get(4)?;
    Some((total - idle, total))
}

/// Waits for the window `[start, end)` (unix nanos) and measures each process across it.
pub async fn measure_window(processes: Vec<(String, u32)>, start_unix_nanos: u64, end_unix_nanos: u64) -> Vec<ProcessUsage> {
    crate::clock::sleep_until_unix(start_unix_nanos).await;
    let started = std::time::Instant::now();
    let machine_at_start = machine_ticks();
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
    let cores = std::thread::available_parallelism().map(|cores| cores.get()).unwrap_or(1) as f64;
    let mut usage: Vec<ProcessUsage> = processes
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
        .collect();
    // The box is shared (compilers, other tests): say how much CPU went to processes that are not part of the run.
    if let (Some((busy_before, total_before)), Some((busy_after, total_after))) = (machine_at_start, machine_ticks()) {
        let machine_percent = 100.0 * cores * (busy_after - busy_before) as f64 / (total_after - total_before).max(1) as f64;
        let ours: f64 = usage.iter().map(|process| process.cpu_percent).sum();
        usage.push(ProcessUsage { name: "other processes on the machine".to_owned(), pid: 0, cpu_percent: (machine_percent - ours).max(0.0), peak_rss_mib: 0.0 });
        usage.push(ProcessUsage { name: format!("machine total (of {:.0})", cores * 100.0), pid: 0, cpu_percent: machine_percent, peak_rss_mib: 0.0 });
    }
    usage
}

/// Appends per second to every JetStream stream (the log, each KV bucket) across the window: shows where the writes go.
pub async fn measure_stream_writes(nats_url: String, start_unix_nanos: u64, end_unix_nanos: u64) -> Vec<(String, f64)> {
    let Ok(client) = devservers::connect_nats(&nats_url).await else { return Vec::new() };
    let jetstream = async_nats::jetstream::new(client);
    crate::clock::sleep_until_unix(start_unix_nanos).await;
    let started = std::time::Instant::now();
    let before = last_sequences(&jetstream).await;
    crate::clock::sleep_until_unix(end_unix_nanos).await;
    let after = last_sequences(&jetstream).await;
    let elapsed = started.elapsed().as_secs_f64().max(1e-3);
    let mut rates: Vec<(String, f64)> = after
        .into_iter()
        .map(|(name, last)| {
            let first = before.iter().find(|(other, _)| *other == name).map_or(0, |(_, last)| *last);
            (name, last.saturating_sub(first) as f64 / elapsed)
        })
        .filter(|(_, rate)| *rate > 0.0)
        .collect();
    rates.sort_by(|a, b| b.1.total_cmp(&a.1));
    rates
}

async fn last_sequences(jetstream: &async_nats::jetstream::Context) -> Vec<(String, u64)> {
    use futures::TryStreamExt;
    jetstream.streams().map_ok(|info| (info.config.name, info.state.last_sequence)).try_collect().await.unwrap_or_default()
}

/// Waits until no JetStream stream has grown for `quiet_for` (at most `limit`), so one phase's backlog
/// does not run into the next phase's window. Returns how long it waited.
pub async fn wait_until_streams_settle(nats_url: &str, quiet_for: std::time::Duration, limit: std::time::Duration) -> std::time::Duration {
    let started = std::time::Instant::now();
    let Ok(client) = devservers::connect_nats(nats_url).await else { return started.elapsed() };
    let jetstream = async_nats::jetstream::new(client);
    let mut previous = last_sequences(&jetstream).await;
    while started.elapsed() < limit {
        tokio::time::sleep(quiet_for).await;
        let now = last_sequences(&jetstream).await;
        if now == previous {
            break;
        }
        previous = now;
    }
    started.elapsed()
}
