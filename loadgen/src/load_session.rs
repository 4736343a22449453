//! The machinery the timetable scenarios share (latency, capacity, large group): groups and connected workers, set up once, then one measured phase at a time.

use std::path::PathBuf;
use std::time::Duration;

use crate::baseline::BaselineLayout;
use crate::plan::{ClientSpec, Command, Phase, Population};
use crate::report::PhaseReport;
use crate::system_under_test::Target;
use crate::worker_pool::{CombinedProgress, WorkerPool};

/// Extra time, beyond a phase's own length, before the coordinator gives up on its workers.
const PHASE_TIMEOUT_MARGIN: Duration = Duration::from_secs(60);
/// A settle that has not happened by then is given up on (the next phase starts anyway, and the report's stream table shows it).
const SETTLE_LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub enum WorkerMode {
    /// Child processes of this executable (`<executable> worker`), so their CPU is visible and separate.
    Processes(PathBuf),
    /// Tasks in this process: for the smoke tests, which have no release binary to re-execute.
    InProcess,
}

/// Who takes part in a session and how the phases are paced.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub population: Population,
    pub client_workers: usize,
    /// Clients bind 127.0.0.1 … 127.0.0.<n> as their source address, round robin.
    pub source_addresses: usize,
    /// Also set up the raw-NATS baseline (publisher, fanout, subscribers) of the same shape.
    pub baseline: bool,
    /// The baseline's streams: how many shards, how many replicas.
    pub baseline_layout: BaselineLayout,
    pub worker_mode: WorkerMode,
    /// Members named when a group is created; the rest are added one by one afterwards (the store
    /// refuses more than 1,000 at creation).
    pub members_at_creation: usize,
    /// Time between announcing a phase and its first due send, so every worker has the command in hand.
    pub phase_lead_time: Duration,
    /// Between phases, no JetStream stream may grow for this long before the next phase starts.
    pub settle_quiet_period: Duration,
}

impl SessionOptions {
    pub fn new(population: Population, worker_mode: WorkerMode) -> SessionOptions {
        SessionOptions {
            population,
            client_workers: 4,
            source_addresses: 4,
            baseline: true,
            baseline_layout: BaselineLayout::default(),
            worker_mode,
            members_at_creation: crate::system_under_test::MAX_MEMBERS_AT_CREATION,
            phase_lead_time: Duration::from_millis(1500),
            settle_quiet_period: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Natter,
    /// Raw NATS, no Natter code in the path.
    Baseline,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Natter => "natter",
            System::Baseline => "baseline",
        }
    }
}

/// The timing of one phase: sends per second, warm-up (sent, not counted), measured window, and time for stragglers.
#[derive(Debug, Clone, Copy)]
pub struct PhaseShape {
    pub rate_per_second: f64,
    pub warmup_seconds: f64,
    pub measure_seconds: f64,
    pub drain_seconds: f64,
}

/// Groups created, every worker connected and ready; phases run one after another on the same clients.
pub struct LoadSession {
    target: Target,
    population: Population,
    options: SessionOptions,
    pool: WorkerPool,
    natter_workers: Vec<usize>,
    baseline_workers: Vec<usize>,
    /// Every process whose CPU and RSS a phase reports: the servers and each worker process.
    sampled_processes: Vec<(String, u32)>,
    phases_run: usize,
}

fn spawn_worker(pool: &mut WorkerPool, mode: &WorkerMode, name: &str) -> anyhow::Result<usize> {
    match mode {
        WorkerMode::Processes(executable) => pool.spawn_process(executable, name),
        WorkerMode::InProcess => Ok(pool.spawn_in_process(name)),
    }
}

impl LoadSession {
    /// Creates the groups over HTTP, starts the client workers (and the baseline's), and waits until all are connected.
    pub async fn start(target: &Target, options: &SessionOptions) -> anyhow::Result<LoadSession> {
        let population = options.population;
        let client_workers = options.client_workers.max(1);
        eprintln!("setup: creating {} group(s) of {} over HTTP", population.groups, population.group_size);
        let conversations = crate::system_under_test::create_groups(target, population, options.members_at_creation).await?;
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
        let share = |worker: usize| -> Vec<ClientSpec> { specs.iter().filter(|spec| spec.client % client_workers == worker).cloned().collect() };

        let mut pool = WorkerPool::default();
        let mut natter_workers = Vec::new();
        for worker in 0..client_workers {
            let index = spawn_worker(&mut pool, &options.worker_mode, &format!("clients-{worker}"))?;
            pool.workers[index].send(Command::NatterClients { population, clients: share(worker) })?;
            natter_workers.push(index);
        }
        let mut baseline_workers = Vec::new();
        if options.baseline {
            let layout = options.baseline_layout;
            crate::baseline::provision(&target.nats_url, layout).await?;
            let fanout = spawn_worker(&mut pool, &options.worker_mode, "baseline-fanout")?;
            pool.workers[fanout].send(Command::BaselineFanout { population, layout, nats_url: target.nats_url.clone() })?;
            let publisher = spawn_worker(&mut pool, &options.worker_mode, "baseline-publisher")?;
            pool.workers[publisher].send(Command::BaselinePublisher { population, layout, nats_url: target.nats_url.clone() })?;
            baseline_workers.push(publisher);
            for worker in 0..client_workers {
                let index = spawn_worker(&mut pool, &options.worker_mode, &format!("subscribers-{worker}"))?;
                pool.workers[index].send(Command::BaselineSubscribers { population, nats_url: target.nats_url.clone(), clients: share(worker) })?;
                baseline_workers.push(index);
            }
        }
        eprintln!("setup: connecting {} WebSocket clients over {client_workers} worker(s){}", population.clients(), if options.baseline { " and as many raw NATS subscribers" } else { "" });
        let every_worker: Vec<usize> = (0..pool.workers.len()).collect();
        pool.wait_ready(&every_worker).await?;

        // Every phase samples every process (Natter's and the baseline's), so a backlog still being worked
        // off by the other system shows up in the table instead of hiding under "other processes".
        let mut sampled_processes = target.processes.clone();
        sampled_processes.extend(pool.workers.iter().filter_map(|worker| worker.pid().map(|pid| (format!("loadgen {}", worker.name), pid))));
        Ok(LoadSession { target: target.clone(), population, options: options.clone(), pool, natter_workers, baseline_workers, sampled_processes, phases_run: 0 })
    }

    pub fn has_baseline(&self) -> bool {
        !self.baseline_workers.is_empty()
    }

    /// Runs one phase of `system` and waits for JetStream to settle after it.
    ///
    /// `stop_early` sees the combined progress once a second; when it names a reason, the workers
    /// stop sending and the phase is reported as far as it got, with the reason in `stopped_early`.
    pub async fn run_phase(&mut self, system: System, shape: PhaseShape, stop_early: impl FnMut(&CombinedProgress) -> Option<String>) -> anyhow::Result<PhaseReport> {
        let participants = match system {
            System::Natter => self.natter_workers.clone(),
            System::Baseline => self.baseline_workers.clone(),
        };
        anyhow::ensure!(!participants.is_empty(), "this session was set up without the {}", system.name());
        self.phases_run += 1;
        let rate = shape.rate_per_second;
        let phase = Phase {
            // Unique per phase: a late frame of an earlier phase can never be taken for one of this phase's.
            tag: format!("{}{}p{}", &system.name()[..1], rate as u64, self.phases_run),
            epoch_unix_nanos: crate::clock::unix_nanos_now() + self.options.phase_lead_time.as_nanos() as u64,
            rate_per_second: rate,
            warmup_seconds: shape.warmup_seconds,
            measure_seconds: shape.measure_seconds,
            drain_seconds: shape.drain_seconds,
            population: self.population,
        };
        for &index in &participants {
            self.pool.workers[index].send(Command::Run { phase: phase.clone() })?;
        }
        let (window_start, window_end) = phase.measured_window_unix_nanos();
        let sampler = tokio::spawn(crate::resources::measure_window(self.sampled_processes.clone(), window_start, window_end));
        let stream_writes = tokio::spawn(crate::resources::measure_stream_writes(self.target.nats_url.clone(), window_start, window_end));
        let timeout = Duration::from_secs_f64(shape.warmup_seconds + shape.measure_seconds + shape.drain_seconds) + self.options.phase_lead_time + PHASE_TIMEOUT_MARGIN;
        let label = format!("{} {rate}/s", system.name());
        let (results, stopped_early) = self.pool.collect_phase_watching(&participants, &label, timeout, stop_early).await?;
        // A phase stopped early ends before its window does; the samplers would otherwise wait for the window's end.
        let usage = if stopped_early.is_some() {
            sampler.abort();
            stream_writes.abort();
            Vec::new()
        } else {
            sampler.await.unwrap_or_default()
        };
        let mut report = PhaseReport::from_workers(system.name(), &phase, &results, usage);
        if stopped_early.is_none() {
            report.stream_writes_per_second = stream_writes.await.unwrap_or_default();
        }
        report.stopped_early = stopped_early;
        eprintln!(
            "  {label}: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; {} of {} deliveries, {} errors{}",
            report.latency_ms.p50,
            report.latency_ms.p99,
            report.latency_ms.p99_9,
            report.latency_ms.max,
            report.deliveries,
            report.expected_deliveries,
            report.errors,
            report.stopped_early.as_ref().map(|reason| format!("; stopped early: {reason}")).unwrap_or_default()
        );
        // A system that fell behind is still working off its backlog; the next phase must not pay for it.
        let quiet_period = self.options.settle_quiet_period;
        let waited = crate::resources::wait_until_streams_settle(&self.target.nats_url, quiet_period, SETTLE_LIMIT).await;
        if waited > quiet_period * 2 {
            eprintln!("  waited {:.1} s for JetStream to settle before the next phase", waited.as_secs_f64());
        }
        Ok(report)
    }

    /// Tells every worker to quit (they close their sockets) and waits briefly for them.
    pub async fn shut_down(self) {
        self.pool.shut_down().await;
    }
}
