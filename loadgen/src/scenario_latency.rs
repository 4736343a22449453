//! The latency scenario: groups of clients sending on a fixed timetable at each rate, Natter and the raw-NATS baseline in turn.

use std::path::PathBuf;
use std::time::Duration;

use crate::plan::{ClientSpec, Command, Phase, Population};
use crate::report::PhaseReport;
use crate::system_under_test::Target;
use crate::worker_pool::WorkerPool;

/// Time between announcing a phase and its first due send, so every worker has the command in hand.
const PHASE_LEAD_TIME: Duration = Duration::from_millis(1500);
/// Extra time, beyond a phase's own length, before the coordinator gives up on its workers.
const PHASE_TIMEOUT_MARGIN: Duration = Duration::from_secs(60);

/// Between phases: no stream may grow for this long before the next phase starts …
const SETTLE_QUIET_PERIOD: Duration = Duration::from_secs(1);
/// … or until this much time has passed (then the next phase starts anyway, and the report's stream table shows it).
const SETTLE_LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub enum WorkerMode {
    /// Child processes of this executable (`<executable> worker`), so their CPU is visible and separate.
    Processes(PathBuf),
    /// Tasks in this process: for the smoke test, which has no release binary to re-execute.
    InProcess,
}

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
    pub worker_mode: WorkerMode,
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
            worker_mode: WorkerMode::InProcess,
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
}

fn spawn_worker(pool: &mut WorkerPool, mode: &WorkerMode, name: &str) -> anyhow::Result<usize> {
    match mode {
        WorkerMode::Processes(executable) => pool.spawn_process(executable, name),
        WorkerMode::InProcess => Ok(pool.spawn_in_process(name)),
    }
}

/// Sets everything up, runs every (repeat, rate, system) phase, and returns one report per phase.
pub async fn run_latency(target: &Target, options: &LatencyOptions) -> anyhow::Result<Vec<PhaseReport>> {
    let population = options.population;
    eprintln!("setup: creating {} groups of {} over HTTP", population.groups, population.group_size);
    let conversations = crate::system_under_test::create_groups(target, population).await?;
    let specs: Vec<ClientSpec> = (0..population.clients())
        .map(|client| {
            let user = crate::plan::user_name(client);
            let device = crate::plan::device_name(client);
            ClientSpec {
                client,
                ws_url: target.ws_url(client, &user, &device, false),
                user,
                device,
                conversation: conversations[population.group_of(client)].clone(),
                source_ip: format!("127.0.0.{}", 1 + client % options.source_addresses.max(1)),
            }
        })
        .collect();
    let share = |worker: usize| -> Vec<ClientSpec> { specs.iter().filter(|spec| spec.client % options.client_workers == worker).cloned().collect() };

    let mut pool = WorkerPool::default();
    let mut natter_workers = Vec::new();
    for worker in 0..options.client_workers {
        let index = spawn_worker(&mut pool, &options.worker_mode, &format!("clients-{worker}"))?;
        pool.workers[index].send(Command::NatterClients { population, clients: share(worker) })?;
        natter_workers.push(index);
    }
    let mut baseline_workers = Vec::new();
    if options.baseline {
        crate::baseline::provision(&target.nats_url).await?;
        let fanout = spawn_worker(&mut pool, &options.worker_mode, "baseline-fanout")?;
        pool.workers[fanout].send(Command::BaselineFanout { population, nats_url: target.nats_url.clone() })?;
        let publisher = spawn_worker(&mut pool, &options.worker_mode, "baseline-publisher")?;
        pool.workers[publisher].send(Command::BaselinePublisher { population, nats_url: target.nats_url.clone() })?;
        baseline_workers.push(publisher);
        for worker in 0..options.client_workers {
            let index = spawn_worker(&mut pool, &options.worker_mode, &format!("subscribers-{worker}"))?;
            pool.workers[index].send(Command::BaselineSubscribers { population, nats_url: target.nats_url.clone(), clients: share(worker) })?;
            baseline_workers.push(index);
        }
    }
    eprintln!("setup: connecting {} WebSocket clients over {} worker(s){}", population.clients(), options.client_workers, if options.baseline { " and as many raw NATS subscribers" } else { "" });
    let every_worker: Vec<usize> = (0..pool.workers.len()).collect();
    pool.wait_ready(&every_worker).await?;

    // Every phase samples every process (Natter's and the baseline's), so a backlog still being worked
    // off by the other system shows up in the table instead of hiding under "other processes".
    let mut sampled_processes = target.processes.clone();
    sampled_processes.extend(pool.workers.iter().filter_map(|worker| worker.pid().map(|pid| (format!("loadgen {}", worker.name), pid))));

    let mut reports = Vec::new();
    for repeat in 0..options.repeats {
        for &rate in &options.rates {
            let mut systems = vec![("natter", &natter_workers)];
            if options.baseline {
                systems.push(("baseline", &baseline_workers));
            }
            for (system, participants) in systems {
                let phase = Phase {
                    tag: format!("{}{}r{repeat}", &system[..1], rate as u64),
                    epoch_unix_nanos: crate::clock::unix_nanos_now() + PHASE_LEAD_TIME.as_nanos() as u64,
                    rate_per_second: rate,
                    warmup_seconds: options.warmup_seconds,
                    measure_seconds: options.measure_seconds,
                    drain_seconds: options.drain_seconds,
                    population,
                };
                eprintln!("run: {system} at {rate} sends/s ({} s warm-up, {} s measured), repeat {}/{}", options.warmup_seconds, options.measure_seconds, repeat + 1, options.repeats);
                for &index in participants.iter() {
                    pool.workers[index].send(Command::Run { phase: phase.clone() })?;
                }
                let (window_start, window_end) = phase.measured_window_unix_nanos();
                let sampler = tokio::spawn(crate::resources::measure_window(sampled_processes.clone(), window_start, window_end));
                let stream_writes = tokio::spawn(crate::resources::measure_stream_writes(target.nats_url.clone(), window_start, window_end));
                let timeout = Duration::from_secs_f64(options.warmup_seconds + options.measure_seconds + options.drain_seconds) + PHASE_LEAD_TIME + PHASE_TIMEOUT_MARGIN;
                let results = pool.collect_phase(participants, &format!("{system} {rate}/s"), timeout).await?;
                let usage = sampler.await.unwrap_or_default();
                let mut report = PhaseReport::from_workers(system, &phase, &results, usage);
                report.stream_writes_per_second = stream_writes.await.unwrap_or_default();
                eprintln!(
                    "  {system} {rate}/s: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; {} of {} deliveries, {} errors",
                    report.latency_ms.p50, report.latency_ms.p99, report.latency_ms.p99_9, report.latency_ms.max, report.deliveries, report.expected_deliveries, report.errors
                );
                reports.push(report);
                // A system that fell behind is still working off its backlog; the next phase must not pay for it.
                let waited = crate::resources::wait_until_streams_settle(&target.nats_url, SETTLE_QUIET_PERIOD, SETTLE_LIMIT).await;
                if waited > SETTLE_QUIET_PERIOD * 2 {
                    eprintln!("  waited {:.1} s for JetStream to settle before the next phase", waited.as_secs_f64());
                }
            }
        }
    }
    pool.shut_down().await;
    Ok(reports)
}
