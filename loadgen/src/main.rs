//! `natter-loadgen`: starts Natter and nats-server as separate processes, runs a scenario, and writes JSON, Markdown and SVG results.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use loadgen::plan::Population;
use loadgen::report::RunReport;
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
    /// Results directory; defaults to target/bench/<unix time>/.
    #[arg(long)]
    out: Option<PathBuf>,
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
    /// Internal: one worker process, driven over stdin/stdout by the coordinator.
    #[command(hide = true)]
    Worker,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
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
            options.worker_mode = WorkerMode::Processes(std::env::current_exe().context("cannot find this executable")?);
            let command = std::env::args().collect::<Vec<_>>().join(" ");
            runtime.block_on(run_latency_command(system, options, command))
        }
        Scenario::History { system, conversations, messages, pages } => {
            let options = loadgen::scenario_history::HistoryOptions { conversations, messages, pages };
            runtime.block_on(run_other_scenario(system, "history", |target| async move {
                let report = loadgen::scenario_history::run_history(&target, &options).await?;
                Ok(serde_json::to_value(report)?)
            }))
        }
        Scenario::Catchup { system, conversations, messages, repeats } => {
            let options = loadgen::scenario_catchup::CatchupOptions { conversations, messages, repeats };
            runtime.block_on(run_other_scenario(system, "catchup", |target| async move {
                let report = loadgen::scenario_catchup::run_catchup(&target, &options).await?;
                Ok(serde_json::to_value(report)?)
            }))
        }
    }
}

/// Starts the system, runs one scenario whose figures are free-form JSON, writes them, stops the system.
async fn run_other_scenario<F, Fut>(system: SystemArgs, scenario: &str, run: F) -> anyhow::Result<()>
where
    F: FnOnce(loadgen::system_under_test::Target) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<serde_json::Value>>,
{
    let natter_binary = match system.natter_bin {
        Some(path) => path,
        None => loadgen::system_under_test::natter_binary_beside_this_one()?,
    };
    eprintln!("setup: starting nats-server, redis-server, {} gateway(s) and {} fanout(s)", system.gateways, system.fanouts);
    let system_under_test = SystemUnderTest::start(&natter_binary, system.gateways, system.fanouts).await?;
    let started_at = time::OffsetDateTime::now_utc();
    let outcome = run(system_under_test.target.clone()).await;
    if outcome.is_err() {
        eprintln!("the run failed; the roles' logs end with:\n{}", system_under_test.role_log_tails(20));
    }
    system_under_test.stop().await;
    let report = RunReport {
        scenario: scenario.to_owned(),
        started_at: started_at.format(&time::format_description::well_known::Rfc3339)?,
        machine: loadgen::report::describe_machine(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        clients: 0,
        groups: 0,
        group_size: 0,
        gateways: system.gateways,
        fanouts: system.fanouts,
        workers: 0,
        phases: Vec::new(),
        extra: outcome?,
    };
    let out = system.out.unwrap_or_else(|| PathBuf::from(format!("target/bench/{scenario}-{}", started_at.unix_timestamp())));
    report.write(&out)?;
    println!("{}", report.markdown());
    eprintln!("results: {}", out.display());
    Ok(())
}

async fn run_latency_command(system: SystemArgs, options: LatencyOptions, command: String) -> anyhow::Result<()> {
    let natter_binary = match system.natter_bin {
        Some(path) => path,
        None => loadgen::system_under_test::natter_binary_beside_this_one()?,
    };
    eprintln!("setup: starting nats-server, redis-server, {} gateway(s) and {} fanout(s) from {}", system.gateways, system.fanouts, natter_binary.display());
    let system_under_test = SystemUnderTest::start(&natter_binary, system.gateways, system.fanouts).await?;
    let started_at = time::OffsetDateTime::now_utc();
    let outcome = loadgen::scenario_latency::run_latency(&system_under_test.target, &options).await;
    system_under_test.stop().await;
    let phases = outcome?;
    let report = RunReport {
        scenario: "latency".to_owned(),
        started_at: started_at.format(&time::format_description::well_known::Rfc3339)?,
        machine: loadgen::report::describe_machine(),
        command,
        clients: options.population.clients(),
        groups: options.population.groups,
        group_size: options.population.group_size,
        gateways: system.gateways,
        fanouts: system.fanouts,
        workers: options.client_workers,
        phases,
        extra: serde_json::Value::Null,
    };
    let out = system.out.unwrap_or_else(|| PathBuf::from(format!("target/bench/{}", started_at.unix_timestamp())));
    report.write(&out)?;
    println!("{}", report.markdown());
    eprintln!("results: {}", out.display());
    Ok(())
}
