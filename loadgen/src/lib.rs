//! Natter's load generator: real WebSocket clients spread over worker processes, a fixed send timetable, and a raw-NATS baseline of the same shape.
//!
//! `natter-loadgen` (src/main.rs) starts the system under test as separate processes and drives
//! the scenarios; the smoke test drives the same code against an in-process `testkit` system.

pub mod baseline;
pub mod clock;
pub mod idle_connections;
pub mod load_session;
pub mod natter_clients;
pub mod plan;
pub mod recorder;
pub mod report;
pub mod resources;
pub mod scenario_capacity;
pub mod scenario_catchup;
pub mod scenario_cluster_scaling;
pub mod scenario_connections;
pub mod scenario_history;
pub mod scenario_large_group;
pub mod scenario_latency;
pub mod scenario_soak;
pub mod svg_plot;
pub mod system_under_test;
pub mod worker;
pub mod worker_pool;

/// The body of `natter-loadgen worker`: commands from stdin lines, events to stdout lines, until stdin closes.
pub async fn run_worker_over_stdio() -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let (commands_tx, commands_rx) = tokio::sync::mpsc::unbounded_channel();
    let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = tokio::spawn(worker::run_worker(commands_rx, events_tx));
    let reader = tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<plan::Command>(&line) {
                Ok(command) => {
                    if commands_tx.send(command).is_err() {
                        return;
                    }
                }
                Err(error) => eprintln!("worker: bad command line: {error}"),
            }
        }
        // stdin closed: the coordinator is gone, so is our reason to run.
        let _ = commands_tx.send(plan::Command::Quit);
    });
    let mut stdout = tokio::io::stdout();
    while let Some(event) = events_rx.recv().await {
        let mut line = serde_json::to_string(&event)?;
        line.push('\n');
        stdout.write_all(line.as_bytes()).await?;
        stdout.flush().await?;
    }
    reader.abort();
    let _ = worker.await;
    Ok(())
}
