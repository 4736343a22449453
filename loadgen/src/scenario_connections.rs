//! The connections scenario: many idle authenticated WebSocket connections over several gateways, and what each costs a gateway in memory.
//!
//! Every process here may hold at most 20,000 open files and that limit cannot be raised, so the
//! connections are spread over enough worker processes (at most `max_per_worker` each), enough
//! gateways (checked against the same limit) and enough 127.0.0.x source addresses (each has
//! ~28,000 ephemeral ports).

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::idle_connections::IdleConnectionsPlan;
use crate::load_session::WorkerMode;
use crate::plan::{Command, Event};
use crate::system_under_test::Target;
use crate::worker_pool::WorkerPool;

/// Issue 4's target: gateway RSS per idle connection.
pub const TARGET_KIB_PER_CONNECTION: f64 = 8.0;
/// A gateway holds its connections' sockets plus a few dozen files of its own, under the 20,000 limit.
const MAX_CONNECTIONS_PER_GATEWAY: usize = 19_000;
/// Slack on top of the time the connect rate needs, for the last connects and a slow start.
const CONNECT_DEADLINE_MARGIN: Duration = Duration::from_secs(120);
/// How long gateways get to show the connections as open files, and later to let them go.
const FD_SETTLE_DEADLINE: Duration = Duration::from_secs(30);
/// Each worker pings its connections within 60 s; this adds room for the slowest.
const PING_DEADLINE: Duration = Duration::from_secs(90);
const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(500);
/// Files a gateway opens and closes on its own (NATS, Redis, a health check) that the socket counts allow for.
const FILES_SLACK_PER_GATEWAY: u64 = 8;
/// The box is shared: connecting stops (and the run fails, closing everything) before free memory drops below this.
const MEMORY_FLOOR_MIB: u64 = 2048;
const POLL_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct ConnectionsOptions {
    pub connections: usize,
    /// Connection attempts per second over all workers.
    pub connects_per_second: f64,
    pub max_per_worker: usize,
    /// 0 = one per 10,000 connections, plus one.
    pub source_addresses: usize,
    /// How long all connections are held idle (RSS sampled meanwhile) before every one is pinged.
    pub hold_seconds: f64,
    pub worker_mode: WorkerMode,
}

impl ConnectionsOptions {
    pub fn full(connections: usize) -> ConnectionsOptions {
        ConnectionsOptions { connections, connects_per_second: 2000.0, max_per_worker: 18_000, source_addresses: 0, hold_seconds: 10.0, worker_mode: WorkerMode::InProcess }
    }

    /// 200 connections in 2 workers, held 1 s.
    pub fn smoke() -> ConnectionsOptions {
        ConnectionsOptions { connections: 200, connects_per_second: 400.0, max_per_worker: 100, source_addresses: 2, hold_seconds: 1.0, worker_mode: WorkerMode::InProcess }
    }

    fn source_address_count(&self) -> usize {
        if self.source_addresses > 0 { self.source_addresses } else { self.connections / 10_000 + 1 }
    }
}

/// One gateway process's share and memory (RSS in KiB; `None` when the gateway runs in this process, as in the smoke test).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewayMemory {
    pub name: String,
    /// Open files gained while the connections were held: each connection is one socket (a few other files may come and go).
    pub connections_seen: Option<u64>,
    pub rss_before_kib: Option<u64>,
    /// At the end of the hold, all connections open and idle.
    pub rss_held_kib: Option<u64>,
    pub rss_peak_kib: Option<u64>,
    /// After every connection was closed.
    pub rss_after_close_kib: Option<u64>,
    pub kib_per_connection: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectionsReport {
    pub connections_asked: usize,
    pub connected: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    pub worker_processes: usize,
    pub source_addresses: usize,
    pub connect_seconds: f64,
    pub connects_per_second_asked: f64,
    pub connects_per_second_achieved: f64,
    /// The `ping` round after the hold: connections that answered `pong`, stayed silent, or had been closed by the server.
    pub answered_ping: usize,
    pub silent: usize,
    pub dropped: usize,
    pub gateways: Vec<GatewayMemory>,
    /// RSS in KiB of the other servers: before the connections, and held.
    pub nats_rss_kib: (Option<u64>, Option<u64>),
    pub redis_rss_kib: (Option<u64>, Option<u64>),
    /// All client worker processes together, connections held (`None` when they are tasks in this process).
    pub client_workers_rss_kib: Option<u64>,
    /// (RSS held − before) summed over gateways / connections held.
    pub gateway_kib_per_connection: Option<f64>,
    pub target_kib_per_connection: f64,
}

impl ConnectionsReport {
    pub fn markdown(&self) -> String {
        let kib = |value: Option<u64>| value.map_or("—".to_owned(), |kib| format!("{:.1}", kib as f64 / 1024.0));
        let mut text = String::new();
        let verdict = match self.gateway_kib_per_connection {
            Some(per) if per <= self.target_kib_per_connection && self.connected == self.connections_asked => "met",
            Some(_) => "missed",
            None => "not measured (gateways in this process)",
        };
        let _ = writeln!(
            text,
            "{} of {} idle connections held ({} failed, {} answered a ping, {} silent, {} dropped) over {} gateway(s), {} client worker process(es), {} source addresses; \
             connected in {:.1} s ({:.0}/s achieved of {:.0}/s asked). Gateway RSS per idle connection: **{}** KiB (target ≤ {} KiB: **{verdict}**).\n",
            self.connected,
            self.connections_asked,
            self.failed,
            self.answered_ping,
            self.silent,
            self.dropped,
            self.gateways.len(),
            self.worker_processes,
            self.source_addresses,
            self.connect_seconds,
            self.connects_per_second_achieved,
            self.connects_per_second_asked,
            self.gateway_kib_per_connection.map_or("—".to_owned(), |per| format!("{per:.2}")),
            self.target_kib_per_connection
        );
        let _ = writeln!(text, "| process | connections | RSS before MiB | RSS held MiB | peak MiB | after close MiB | KiB per connection |");
        let _ = writeln!(text, "|---|---:|---:|---:|---:|---:|---:|");
        for gateway in &self.gateways {
            let _ = writeln!(
                text,
                "| {} | {} | {} | {} | {} | {} | {} |",
                gateway.name,
                gateway.connections_seen.map_or("—".to_owned(), |count| count.to_string()),
                kib(gateway.rss_before_kib),
                kib(gateway.rss_held_kib),
                kib(gateway.rss_peak_kib),
                kib(gateway.rss_after_close_kib),
                gateway.kib_per_connection.map_or("—".to_owned(), |per| format!("{per:.2}"))
            );
        }
        let _ = writeln!(text, "| nats-server | — | {} | {} | — | — | — |", kib(self.nats_rss_kib.0), kib(self.nats_rss_kib.1));
        let _ = writeln!(text, "| redis-server | — | {} | {} | — | — | — |", kib(self.redis_rss_kib.0), kib(self.redis_rss_kib.1));
        let _ = writeln!(text, "| load generator (all client workers) | {} | — | {} | — | — | — |", self.connected, kib(self.client_workers_rss_kib));
        if let Some(error) = &self.first_error {
            let _ = writeln!(text, "\nFirst error: {error}");
        }
        text
    }
}

/// Open files of a process, from /proc/<pid>/fd.
fn open_files(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

fn pid_of(target: &Target, name: &str) -> Option<u32> {
    target.processes.iter().find(|(process, _)| process == name).map(|(_, pid)| *pid)
}

pub async fn run_connections(target: &Target, options: &ConnectionsOptions) -> anyhow::Result<ConnectionsReport> {
    let gateway_count = target.gateways.len();
    let per_gateway = options.connections.div_ceil(gateway_count.max(1));
    if per_gateway > MAX_CONNECTIONS_PER_GATEWAY {
        bail!(
            "{} connections over {gateway_count} gateway(s) is {per_gateway} per gateway; each gateway may hold only 20,000 open files: use --gateways {} or more",
            options.connections,
            options.connections.div_ceil(MAX_CONNECTIONS_PER_GATEWAY)
        );
    }
    let workers = options.connections.div_ceil(options.max_per_worker.max(1)).max(1);
    let source_ips: Vec<String> = (1..=options.source_address_count()).map(|host| format!("127.0.0.{host}")).collect();
    // Gateway pids exist only when the gateways are processes of their own (not in the smoke test).
    let gateway_pids: Vec<Option<u32>> = (0..gateway_count).map(|gateway| pid_of(target, &format!("gateway-{gateway}"))).collect();
    let rss_of = |pid: Option<u32>| pid.and_then(crate::resources::rss_kib);
    let files_of = |pid: Option<u32>| pid.and_then(open_files);
    let rss_before: Vec<Option<u64>> = gateway_pids.iter().map(|pid| rss_of(*pid)).collect();
    let files_before: Vec<Option<u64>> = gateway_pids.iter().map(|pid| files_of(*pid)).collect();
    let (nats_pid, redis_pid) = (pid_of(target, "nats-server"), pid_of(target, "redis-server"));
    let (nats_before, redis_before) = (rss_of(nats_pid), rss_of(redis_pid));

    eprintln!(
        "connections: {} idle connections over {gateway_count} gateway(s) from {workers} worker(s) and {} source addresses, {} connects/s",
        options.connections,
        source_ips.len(),
        options.connects_per_second
    );
    let mut pool = WorkerPool::default();
    let base = options.connections / workers;
    let mut first_connection = 0;
    for worker in 0..workers {
        let count = base + usize::from(worker < options.connections % workers);
        let plan = IdleConnectionsPlan {
            gateways: target.gateways.clone(),
            jwt_secret: target.jwt_secret.clone(),
            first_connection,
            count,
            source_ips: source_ips.clone(),
            connects_per_second: options.connects_per_second / workers as f64,
        };
        first_connection += count;
        let index = match &options.worker_mode {
            WorkerMode::Processes(executable) => pool.spawn_process(executable, &format!("idle-{worker}"))?,
            WorkerMode::InProcess => pool.spawn_in_process(&format!("idle-{worker}")),
        };
        pool.workers[index].send(Command::IdleConnections { plan })?;
    }

    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs_f64(options.connections as f64 / options.connects_per_second.max(1e-3)) + CONNECT_DEADLINE_MARGIN;
    let outcome = connect_all(&mut pool, workers, deadline).await;
    let connect_seconds = started.elapsed().as_secs_f64();
    let (connected, failed, first_error) = match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            pool.shut_down().await;
            return Err(error);
        }
    };
    eprintln!("connections: {connected} connected, {failed} failed in {connect_seconds:.1} s");

    // The clients finished their handshakes; the gateways should now show one socket per connection
    // (less a few files of their own that come and go, such as the start-up health check's connection).
    let expected_files: u64 = (files_before.iter().flatten().sum::<u64>() + connected as u64).saturating_sub(FILES_SLACK_PER_GATEWAY * gateway_count as u64);
    let gateways_hold_them = || gateway_pids.iter().map(|pid| files_of(*pid).unwrap_or(0)).sum::<u64>() >= expected_files;
    if gateway_pids.iter().all(Option::is_some) && !wait_for(FD_SETTLE_DEADLINE, gateways_hold_them).await {
        eprintln!("connections: the gateways show fewer open sockets than connections after {FD_SETTLE_DEADLINE:?}");
    }

    // The hold: everything idle; RSS sampled so the report has both the settled value and the peak.
    let mut rss_peak = rss_before.clone();
    let hold_until = tokio::time::Instant::now() + Duration::from_secs_f64(options.hold_seconds);
    loop {
        for (peak, pid) in rss_peak.iter_mut().zip(&gateway_pids) {
            *peak = (*peak).max(rss_of(*pid));
        }
        if tokio::time::Instant::now() >= hold_until {
            break;
        }
        tokio::time::sleep(RSS_SAMPLE_INTERVAL).await;
    }
    let rss_held: Vec<Option<u64>> = gateway_pids.iter().map(|pid| rss_of(*pid)).collect();
    let files_held: Vec<Option<u64>> = gateway_pids.iter().map(|pid| files_of(*pid)).collect();
    let (nats_held, redis_held) = (rss_of(nats_pid), rss_of(redis_pid));
    let client_workers_rss_kib: Option<u64> = pool.workers.iter().map(|worker| rss_of(worker.pid())).sum();

    eprintln!("connections: pinging every connection");
    let pings = ping_all(&mut pool, workers).await;
    eprintln!("connections: closing every connection");
    pool.shut_down().await;
    if gateway_pids.iter().all(Option::is_some) {
        let baseline_files: u64 = files_before.iter().flatten().sum();
        let let_go = || gateway_pids.iter().map(|pid| files_of(*pid).unwrap_or(0)).sum::<u64>() <= baseline_files + FILES_SLACK_PER_GATEWAY * gateway_count as u64;
        if !wait_for(FD_SETTLE_DEADLINE, let_go).await {
            eprintln!("connections: the gateways still hold sockets {FD_SETTLE_DEADLINE:?} after the clients closed");
        }
    }
    let rss_after_close: Vec<Option<u64>> = gateway_pids.iter().map(|pid| rss_of(*pid)).collect();
    let (answered_ping, silent, dropped) = pings?;

    let assigned_to = |gateway: usize| (0..options.connections).filter(|connection| connection % gateway_count == gateway).count();
    let connected_share = connected as f64 / options.connections.max(1) as f64;
    let gateways: Vec<GatewayMemory> = (0..gateway_count)
        .map(|gateway| {
            let connections_seen = files_held[gateway].zip(files_before[gateway]).map(|(held, before)| held.saturating_sub(before));
            let grown = rss_held[gateway].zip(rss_before[gateway]).map(|(held, before)| held as f64 - before as f64);
            GatewayMemory {
                name: format!("gateway-{gateway}"),
                connections_seen,
                rss_before_kib: rss_before[gateway],
                rss_held_kib: rss_held[gateway],
                rss_peak_kib: rss_peak[gateway],
                rss_after_close_kib: rss_after_close[gateway],
                // Connection `n` goes to gateway `n % gateways`; failures are few and spread alike, so scale by the share that connected.
                kib_per_connection: grown.map(|grown| grown / (assigned_to(gateway) as f64 * connected_share).max(1.0)),
            }
        })
        .collect();
    let grown_total: Option<f64> = gateways.iter().map(|gateway| gateway.rss_held_kib.zip(gateway.rss_before_kib).map(|(held, before)| held as f64 - before as f64)).sum();
    Ok(ConnectionsReport {
        connections_asked: options.connections,
        connected,
        failed,
        first_error,
        worker_processes: workers,
        source_addresses: source_ips.len(),
        connect_seconds,
        connects_per_second_asked: options.connects_per_second,
        connects_per_second_achieved: connected as f64 / connect_seconds.max(1e-3),
        answered_ping,
        silent,
        dropped,
        gateways,
        nats_rss_kib: (nats_before, nats_held),
        client_workers_rss_kib,
        redis_rss_kib: (redis_before, redis_held),
        gateway_kib_per_connection: grown_total.filter(|_| connected > 0).map(|grown| grown / connected as f64),
        target_kib_per_connection: TARGET_KIB_PER_CONNECTION,
    })
}

/// Waits for `Ready` from every worker, printing the combined connect progress once a second.
async fn connect_all(pool: &mut WorkerPool, workers: usize, deadline: tokio::time::Instant) -> anyhow::Result<(usize, usize, Option<String>)> {
    let mut progress = vec![(0usize, 0usize); workers];
    let mut ready = 0;
    let (mut connected, mut failed, mut first_error) = (0, 0, None);
    let mut last_print = tokio::time::Instant::now();
    while ready < workers {
        let (index, event) = pool.next_event_until(deadline).await.context("idle connections: workers did not finish connecting in time")?;
        match event {
            Event::ConnectProgress { connected, failed } => {
                progress[index] = (connected, failed);
                if let Some(available) = memory_available_mib()
                    && available < MEMORY_FLOOR_MIB
                {
                    let connected: usize = progress.iter().map(|(connected, _)| connected).sum();
                    bail!("stopped at {connected} connections: the machine has {available} MiB of memory available, under the {MEMORY_FLOOR_MIB} MiB floor");
                }
                if last_print.elapsed() >= Duration::from_secs(1) {
                    let (connected, failed) = progress.iter().fold((0, 0), |(c, f), (wc, wf)| (c + wc, f + wf));
                    eprintln!("  connected {connected}, failed {failed}");
                    last_print = tokio::time::Instant::now();
                }
            }
            Event::Ready { connected: worker_connected, failed: worker_failed, first_error: worker_error } => {
                ready += 1;
                connected += worker_connected;
                failed += worker_failed;
                if first_error.is_none() {
                    first_error = worker_error;
                }
            }
            Event::Failed { message } => bail!("worker {}: {message}", pool.workers[index].name),
            _ => {}
        }
    }
    Ok((connected, failed, first_error))
}

/// Asks every worker to ping its connections; returns (answered, silent, dropped) summed.
async fn ping_all(pool: &mut WorkerPool, workers: usize) -> anyhow::Result<(usize, usize, usize)> {
    for worker in &pool.workers {
        worker.send(Command::PingAll)?;
    }
    let deadline = tokio::time::Instant::now() + PING_DEADLINE;
    let (mut replies, mut answered, mut silent, mut dropped) = (0, 0, 0, 0);
    while replies < workers {
        let (index, event) = pool.next_event_until(deadline).await.context("idle connections: pings not answered in time")?;
        match event {
            Event::Pinged { answered: a, silent: s, dropped: d } => {
                replies += 1;
                (answered, silent, dropped) = (answered + a, silent + s, dropped + d);
            }
            Event::Failed { message } => bail!("worker {}: {message}", pool.workers[index].name),
            _ => {}
        }
    }
    Ok((answered, silent, dropped))
}

/// MemAvailable from /proc/meminfo.
fn memory_available_mib() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|line| line.starts_with("MemAvailable:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? / 1024)
}

/// Polls `condition` until it holds or `deadline` passes; true when it held.
async fn wait_for(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let give_up_at = tokio::time::Instant::now() + deadline;
    while !condition() {
        if tokio::time::Instant::now() >= give_up_at {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    true
}
