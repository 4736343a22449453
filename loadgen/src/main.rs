//! `natter-loadgen`: starts Natter and nats-server as separate processes, runs a scenario, and writes JSON, Markdown and SVG results.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use loadgen::plan::Population;
use loadgen::report::RunReport;
use loadgen::scenario_capacity::CapacityOptions;
use loadgen::scenario_connections::ConnectionsOptions;
use loadgen::scenario_large_group::LargeGroupOptions;
use loadgen::scenario_latency::{LatencyOptions, WorkerMode};
use loadgen::system_under_test::SystemUnderTest;

#[derive(Parser)]
#[command(name = "natter-loadgen", about = "Load generator and benchmarks for Natter, side by side with raw NATS")]
struct Cli {
    #[command(subcommand)]
    command: Scenario,
}

#[derive(clap::Args, Clone)]
struct SystemArgs {
    /// Gateway processes; clients are spread over them round robin.
    #[arg(long, default_value_t = 1)]
    gateways: usize,
    /// Fanout worker processes.
    #[arg(long, default_value_t = 1)]
    fanouts: usize,
    /// The natter binary; defaults to the one beside this executable (target/release/natter).
    #[arg(long)]
    natter_bin: Option<PathBuf>,
    /// Results directory; defaults to target/bench/<scenario>-<unix time>/.
    #[arg(long)]
    out: Option<PathBuf>,
    /// `KEY=VALUE` set in every natter role's environment (repeatable), e.g. a raised limit for this run.
    #[arg(long = "role-env")]
    role_environment: Vec<String>,
}

#[derive(Subcommand)]
enum Scenario {
    /// Groups sending on a fixed timetable at each rate; Natter, then raw NATS, per rate.
    Latency {
        #[command(flatten)]
        system: SystemArgs,
        /// Sends per second, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "500,2000,5000")]
        rates: Vec<f64>,
        /// Measured seconds per phase (after the warm-up).
        #[arg(long, default_value_t = 20.0)]
        duration: f64,
        #[arg(long, default_value_t = 5.0)]
        warmup: f64,
        #[arg(long, default_value_t = 100)]
        groups: usize,
        #[arg(long, default_value_t = 10)]
        group_size: usize,
        /// Client worker processes (and as many baseline subscriber processes).
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// Distinct 127.0.0.x source addresses for client sockets.
        #[arg(long, default_value_t = 4)]
        source_addresses: usize,
        /// Run each rate this many times (report every run; BENCHMARKS.md takes medians).
        #[arg(long, default_value_t = 1)]
        repeats: usize,
        /// Skip the raw-NATS baseline.
        #[arg(long)]
        no_baseline: bool,
        /// 50 clients in 5 groups, one rate, 2 s: checks the harness, not the system.
        #[arg(long)]
        smoke: bool,
    },
    /// Fill the log (straight into JetStream, in Natter's stored format), then time 50-message pages over HTTP.
    History {
        #[command(flatten)]
        system: SystemArgs,
        #[arg(long, default_value_t = 10_000)]
        conversations: usize,
        #[arg(long, default_value_t = 1_000_000)]
        messages: usize,
        #[arg(long, default_value_t = 2000)]
        pages: usize,
    },
    /// A device offline while messages arrive over many conversations; time from reconnect to `synced`.
    Catchup {
        #[command(flatten)]
        system: SystemArgs,
        #[arg(long, default_value_t = 50)]
        conversations: usize,
        #[arg(long, default_value_t = 1000)]
        messages: usize,
        #[arg(long, default_value_t = 5)]
        repeats: usize,
    },
    /// Clients connect, sync, chat and disconnect in cycles; memory and open files of every process after each cycle, every message accounted for.
    Soak {
        #[command(flatten)]
        system: SystemArgs,
        #[arg(long, default_value_t = 20)]
        groups: usize,
        #[arg(long, default_value_t = 10)]
        group_size: usize,
        /// Connect → sync → send → close rounds of every client.
        #[arg(long, default_value_t = 60)]
        cycles: usize,
        /// 2 groups of 5, 4 cycles: checks the harness, not the system.
        #[arg(long)]
        smoke: bool,
    },
    /// The highest send rate whose p99 stays within the SLO for a whole window: doubling, then bisection.
    Capacity {
        #[command(flatten)]
        system: SystemArgs,
        /// p99 end to end (due time → `message` frame) a probe must stay within, ms.
        #[arg(long, default_value_t = 150.0)]
        slo_ms: f64,
        /// Measured seconds per probe (after the warm-up).
        #[arg(long, default_value_t = 60.0)]
        duration: f64,
        #[arg(long, default_value_t = 5.0)]
        warmup: f64,
        /// The first probe's sends/s.
        #[arg(long, default_value_t = 500.0)]
        start_rate: f64,
        #[arg(long, default_value_t = 50_000.0)]
        max_rate: f64,
        /// Bisection stops when (first fail − last pass) / last pass is at most this.
        #[arg(long, default_value_t = 0.1)]
        resolution: f64,
        /// Probes per system at most (bounds the run: each probe is at most warm-up + duration + ~70 s).
        #[arg(long, default_value_t = 10)]
        max_probes: usize,
        #[arg(long, default_value_t = 100)]
        groups: usize,
        #[arg(long, default_value_t = 10)]
        group_size: usize,
        #[arg(long, default_value_t = 4)]
        workers: usize,
        #[arg(long, default_value_t = 4)]
        source_addresses: usize,
        /// Also search the raw-NATS baseline's capacity (same shape, same SLO).
        #[arg(long)]
        baseline: bool,
        /// 50 clients, probes of 1 s at 50 and 100 sends/s: checks the harness, not the system.
        #[arg(long)]
        smoke: bool,
    },
    /// Idle authenticated WebSocket connections over several gateways; gateway RSS per connection.
    Connections {
        #[arg(long, default_value_t = 100_000)]
        connections: usize,
        /// Gateway processes (each may hold at most 20,000 open files).
        #[arg(long, default_value_t = 6)]
        gateways: usize,
        /// Connection attempts per second, over all client workers.
        #[arg(long, default_value_t = 2000.0)]
        connect_rate: f64,
        /// Connections per client worker process at most (each may hold at most 20,000 open files).
        #[arg(long, default_value_t = 18_000)]
        per_worker: usize,
        /// 127.0.0.x source addresses; 0 = one per 10,000 connections, plus one.
        #[arg(long, default_value_t = 0)]
        source_addresses: usize,
        /// Seconds all connections are held idle (RSS sampled) before each is pinged and all are closed.
        #[arg(long, default_value_t = 10.0)]
        hold: f64,
        #[arg(long)]
        natter_bin: Option<PathBuf>,
        #[arg(long)]
        out: Option<PathBuf>,
        /// `KEY=VALUE` set in every natter role's environment (repeatable).
        #[arg(long = "role-env")]
        role_environment: Vec<String>,
        /// 200 connections over the given gateways, held 1 s.
        #[arg(long)]
        smoke: bool,
    },
    /// One group of many connected members sending on a fixed timetable; Natter, then raw NATS.
    LargeGroup {
        #[command(flatten)]
        system: SystemArgs,
        #[arg(long, default_value_t = 2000)]
        members: usize,
        /// Sends per second into the group.
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        #[arg(long, default_value_t = 20.0)]
        duration: f64,
        #[arg(long, default_value_t = 5.0)]
        warmup: f64,
        #[arg(long, default_value_t = 4)]
        workers: usize,
        #[arg(long, default_value_t = 4)]
        source_addresses: usize,
        #[arg(long)]
        no_baseline: bool,
        /// 40 members, 20 sends/s for 2 s.
        #[arg(long)]
        smoke: bool,
    },
    /// Issue 11's scaled-down capacity model: per shard count a fresh 3-node R3 cluster, its capacity, leader placement and CPU.
    ClusterScaling {
        /// Shard counts (`NATTER_MESSAGE_SHARDS`), each on its own fresh cluster, in this order.
        #[arg(long, value_delimiter = ',', default_value = "1,3")]
        shards: Vec<usize>,
        #[arg(long, default_value_t = 3)]
        replicas: usize,
        #[arg(long, default_value_t = 3)]
        gateways: usize,
        #[arg(long, default_value_t = 2)]
        fanouts: usize,
        /// p99 delivery (due time → `message` frame) and p99 ack a probe must stay within, ms.
        #[arg(long, default_value_t = 150.0)]
        slo_ms: f64,
        #[arg(long, default_value_t = 15.0)]
        duration: f64,
        #[arg(long, default_value_t = 3.0)]
        warmup: f64,
        #[arg(long, default_value_t = 250.0)]
        start_rate: f64,
        #[arg(long, default_value_t = 50_000.0)]
        max_rate: f64,
        #[arg(long, default_value_t = 0.15)]
        resolution: f64,
        /// Probes per system and shard count at most (each is at most warm-up + duration + ~70 s).
        #[arg(long, default_value_t = 6)]
        max_probes: usize,
        #[arg(long, default_value_t = 100)]
        groups: usize,
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// Skip the raw-NATS search (a stream per shard, same replicas, on the same cluster).
        #[arg(long)]
        no_baseline: bool,
        #[arg(long)]
        natter_bin: Option<PathBuf>,
        #[arg(long)]
        out: Option<PathBuf>,
        /// `KEY=VALUE` set in every natter role's environment (repeatable); shards and replicas are set by this scenario.
        #[arg(long = "role-env")]
        role_environment: Vec<String>,
        /// 50 clients, 1 s probes at 50 and 100 sends/s: checks the harness, not the system.
        #[arg(long)]
        smoke: bool,
    },
    /// Internal: one worker process, driven over stdin/stdout by the coordinator.
    #[command(hide = true)]
    Worker,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    match cli.command {
        // A worker gets its own small runtime: one thread is plenty for a few hundred sockets and keeps
        // the workers from competing with the system under test for both cores.
        Scenario::Worker => tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(loadgen::run_worker_over_stdio()),
        Scenario::Latency { system, rates, duration, warmup, groups, group_size, workers, source_addresses, repeats, no_baseline, smoke } => {
            let mut options = if smoke { LatencyOptions::smoke() } else { LatencyOptions::full() };
            if !smoke {
                options.population = Population { groups, group_size };
                options.rates = rates;
                options.measure_seconds = duration;
                options.warmup_seconds = warmup;
                options.client_workers = workers.max(1);
                options.source_addresses = source_addresses.max(1);
            }
            options.repeats = repeats.max(1);
            options.baseline = !no_baseline;
            options.worker_mode = worker_processes()?;
            let shape = ReportShape::of(&options, system.gateways, system.fanouts);
            runtime.block_on(run_scenario(system, "latency", command, |target| async move {
                let phases = loadgen::scenario_latency::run_latency(&target, &options).await?;
                Ok(Outcome { shape, phases, extra: serde_json::Value::Null, summary_markdown: None })
            }))
        }
        Scenario::Capacity { system, slo_ms, duration, warmup, start_rate, max_rate, resolution, max_probes, groups, group_size, workers, source_addresses, baseline, smoke } => {
            let mut options = if smoke { CapacityOptions::smoke() } else { CapacityOptions::full() };
            if !smoke {
                options.timetable.population = Population { groups, group_size };
                options.timetable.measure_seconds = duration;
                options.timetable.warmup_seconds = warmup;
                options.timetable.client_workers = workers.max(1);
                options.timetable.source_addresses = source_addresses.max(1);
                options.slo_p99_ms = slo_ms;
                options.start_rate = start_rate;
                options.max_rate = max_rate;
                options.resolution = resolution;
                options.max_probes = max_probes.max(1);
            }
            options.timetable.baseline = baseline;
            options.timetable.worker_mode = worker_processes()?;
            let shape = ReportShape::of(&options.timetable, system.gateways, system.fanouts);
            runtime.block_on(run_scenario(system, "capacity", command, |target| async move {
                let (phases, capacity) = loadgen::scenario_capacity::run_capacity(&target, &options).await?;
                Ok(Outcome { shape, phases, summary_markdown: Some(capacity.markdown()), extra: serde_json::to_value(capacity)? })
            }))
        }
        Scenario::LargeGroup { system, members, rate, duration, warmup, workers, source_addresses, no_baseline, smoke } => {
            let mut options = if smoke { LargeGroupOptions::smoke() } else { LargeGroupOptions::full(members, rate) };
            if !smoke {
                options.timetable.measure_seconds = duration;
                options.timetable.warmup_seconds = warmup;
                options.timetable.client_workers = workers.max(1);
                options.timetable.source_addresses = source_addresses.max(1);
            }
            options.timetable.baseline = !no_baseline;
            options.timetable.worker_mode = worker_processes()?;
            let shape = ReportShape::of(&options.timetable, system.gateways, system.fanouts);
            runtime.block_on(run_scenario(system, "large-group", command, |target| async move {
                let (phases, large_group) = loadgen::scenario_large_group::run_large_group(&target, &options).await?;
                Ok(Outcome { shape, summary_markdown: Some(large_group.markdown(&phases)), extra: serde_json::to_value(large_group)?, phases })
            }))
        }
        Scenario::ClusterScaling {
            shards, replicas, gateways, fanouts, slo_ms, duration, warmup, start_rate, max_rate, resolution, max_probes, groups, workers, no_baseline, natter_bin, out, role_environment, smoke,
        } => {
            use loadgen::scenario_cluster_scaling::ClusterScalingOptions;
            let mut options = if smoke { ClusterScalingOptions::smoke() } else { ClusterScalingOptions::full() };
            let capacity = &mut options.capacity;
            if !smoke {
                capacity.timetable.population.groups = groups.max(1);
                capacity.timetable.measure_seconds = duration;
                capacity.timetable.warmup_seconds = warmup;
                capacity.timetable.client_workers = workers.max(1);
                capacity.slo_p99_ms = slo_ms;
                capacity.ack_slo_p99_ms = Some(slo_ms);
                capacity.start_rate = start_rate;
                capacity.max_rate = max_rate;
                capacity.resolution = resolution;
                capacity.max_probes = max_probes.max(1);
            }
            capacity.timetable.baseline = !no_baseline;
            capacity.timetable.worker_mode = worker_processes()?;
            options.shards = shards.into_iter().map(|count| count.max(1)).collect();
            options.replicas = replicas.max(1);
            options.gateways = gateways.max(1);
            options.fanouts = fanouts.max(1);
            options.role_environment = role_environment;
            let shape = ReportShape::of(&options.capacity.timetable, options.gateways, options.fanouts);
            let natter_binary = match natter_bin {
                Some(path) => path,
                None => loadgen::system_under_test::natter_binary_beside_this_one()?,
            };
            runtime.block_on(async move {
                let started_at = time::OffsetDateTime::now_utc();
                let (phases, scaling) = loadgen::scenario_cluster_scaling::run_cluster_scaling(&natter_binary, &options).await?;
                let outcome = Outcome { shape, phases, summary_markdown: Some(scaling.markdown()), extra: serde_json::to_value(scaling)? };
                write_report("cluster-scaling", command, started_at, outcome, out)
            })
        }
        Scenario::Connections { connections, gateways, connect_rate, per_worker, source_addresses, hold, natter_bin, out, role_environment, smoke } => {
            let mut options = if smoke { ConnectionsOptions::smoke() } else { ConnectionsOptions::full(connections) };
            if !smoke {
                options.connects_per_second = connect_rate;
                options.max_per_worker = per_worker.max(1);
                options.source_addresses = source_addresses;
                options.hold_seconds = hold;
            }
            options.worker_mode = worker_processes()?;
            let system = SystemArgs { gateways: gateways.max(1), fanouts: 1, natter_bin, out, role_environment };
            let shape = ReportShape { clients: options.connections, groups: 0, group_size: 0, gateways: system.gateways, fanouts: 1, workers: options.connections.div_ceil(options.max_per_worker) };
            runtime.block_on(run_scenario(system, "connections", command, |target| async move {
                let connections = loadgen::scenario_connections::run_connections(&target, &options).await?;
                Ok(Outcome { shape, phases: Vec::new(), summary_markdown: Some(connections.markdown()), extra: serde_json::to_value(connections)? })
            }))
        }
        Scenario::History { system, conversations, messages, pages } => {
            let options = loadgen::scenario_history::HistoryOptions { conversations, messages, pages };
            let shape = ReportShape { clients: 0, groups: 0, group_size: 0, gateways: system.gateways, fanouts: system.fanouts, workers: 0 };
            runtime.block_on(run_scenario(system, "history", command, |target| async move {
                let report = loadgen::scenario_history::run_history(&target, &options).await?;
                Ok(Outcome { shape, phases: Vec::new(), extra: serde_json::to_value(report)?, summary_markdown: None })
            }))
        }
        Scenario::Soak { system, groups, group_size, cycles, smoke } => {
            let options = if smoke {
                loadgen::scenario_soak::SoakOptions { population: Population { groups: 2, group_size: 5 }, cycles: 4 }
            } else {
                loadgen::scenario_soak::SoakOptions { population: Population { groups, group_size }, cycles }
            };
            let population = options.population;
            let shape = ReportShape { clients: population.clients(), groups: population.groups, group_size: population.group_size, gateways: system.gateways, fanouts: system.fanouts, workers: 0 };
            runtime.block_on(run_scenario(system, "soak", command, |target| async move {
                let report = loadgen::scenario_soak::run_soak(&target, &options).await?;
                anyhow::ensure!(report.messages_missing == 0, "{} messages missing after the final sync", report.messages_missing);
                Ok(Outcome { shape, phases: Vec::new(), summary_markdown: Some(loadgen::scenario_soak::summary_markdown(&report)), extra: serde_json::to_value(report)? })
            }))
        }
        Scenario::Catchup { system, conversations, messages, repeats } => {
            let options = loadgen::scenario_catchup::CatchupOptions { conversations, messages, repeats };
            let shape = ReportShape { clients: 0, groups: 0, group_size: 0, gateways: system.gateways, fanouts: system.fanouts, workers: 0 };
            runtime.block_on(run_scenario(system, "catchup", command, |target| async move {
                let report = loadgen::scenario_catchup::run_catchup(&target, &options).await?;
                Ok(Outcome { shape, phases: Vec::new(), extra: serde_json::to_value(report)?, summary_markdown: None })
            }))
        }
    }
}

/// Client workers are child processes of this executable, so their CPU shows separately from the system's.
fn worker_processes() -> anyhow::Result<WorkerMode> {
    Ok(WorkerMode::Processes(std::env::current_exe().context("cannot find this executable")?))
}

/// Who took part, as the report's header states it.
struct ReportShape {
    clients: usize,
    groups: usize,
    group_size: usize,
    gateways: usize,
    fanouts: usize,
    workers: usize,
}

impl ReportShape {
    fn of(options: &LatencyOptions, gateways: usize, fanouts: usize) -> ReportShape {
        let population = options.population;
        ReportShape { clients: population.clients(), groups: population.groups, group_size: population.group_size, gateways, fanouts, workers: options.client_workers }
    }
}

/// What a scenario hands back to be written: phases (tables and plot), free-form figures, and its own summary.
struct Outcome {
    shape: ReportShape,
    phases: Vec<loadgen::report::PhaseReport>,
    extra: serde_json::Value,
    summary_markdown: Option<String>,
}

/// Starts the system, runs one scenario, stops the system (also when the scenario failed), and writes the report.
async fn run_scenario<F, Fut>(system: SystemArgs, scenario: &str, command: String, run: F) -> anyhow::Result<()>
where
    F: FnOnce(loadgen::system_under_test::Target) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Outcome>>,
{
    let natter_binary = match system.natter_bin {
        Some(path) => path,
        None => loadgen::system_under_test::natter_binary_beside_this_one()?,
    };
    eprintln!("setup: starting nats-server, redis-server, {} gateway(s) and {} fanout(s) from {}", system.gateways, system.fanouts, natter_binary.display());
    let system_under_test = SystemUnderTest::start_with_environment(&natter_binary, system.gateways, system.fanouts, &system.role_environment).await?;
    let started_at = time::OffsetDateTime::now_utc();
    let outcome = run(system_under_test.target.clone()).await;
    if outcome.is_err() {
        eprintln!("the run failed; the roles' logs end with:\n{}", system_under_test.role_log_tails(20));
    }
    system_under_test.stop().await;
    write_report(scenario, command, started_at, outcome?, system.out)
}

/// Writes the run's JSON, Markdown and plot to `out` (default target/bench/<scenario>-<unix time>/) and prints the Markdown.
fn write_report(scenario: &str, command: String, started_at: time::OffsetDateTime, outcome: Outcome, out: Option<PathBuf>) -> anyhow::Result<()> {
    let shape = outcome.shape;
    let report = RunReport {
        scenario: scenario.to_owned(),
        started_at: started_at.format(&time::format_description::well_known::Rfc3339)?,
        machine: loadgen::report::describe_machine(),
        command,
        clients: shape.clients,
        groups: shape.groups,
        group_size: shape.group_size,
        gateways: shape.gateways,
        fanouts: shape.fanouts,
        workers: shape.workers,
        phases: outcome.phases,
        extra: outcome.extra,
        summary_markdown: outcome.summary_markdown,
    };
    let out = out.unwrap_or_else(|| PathBuf::from(format!("target/bench/{scenario}-{}", started_at.unix_timestamp())));
    report.write(&out)?;
    println!("{}", report.markdown());
    eprintln!("results: {}", out.display());
    Ok(())
}
