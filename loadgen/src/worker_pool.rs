//! Starting workers, as child processes of this binary or as in-process tasks, and gathering their events into one stream.

use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::plan::{Command, Event};
use crate::recorder::{ProgressSnapshot, WorkerPhaseResult};

/// How long a worker may take to connect or subscribe its share before the run gives up.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// The progress of one phase summed over its workers; the ack median is the worst worker's.
#[derive(Debug, Clone, Copy, Default)]
pub struct CombinedProgress {
    pub sent: u64,
    pub received: u64,
    pub sends_made: u64,
    pub acks_seen: u64,
    /// The highest of the workers' medians since their previous report: each worker's senders are a
    /// random slice of all senders, so the worst slice is a fair and cautious stand-in for the whole.
    pub recent_ack_p50_ms: Option<f64>,
}

impl CombinedProgress {
    fn of<'a>(snapshots: impl Iterator<Item = &'a ProgressSnapshot>) -> CombinedProgress {
        snapshots.fold(CombinedProgress::default(), |total, snapshot| CombinedProgress {
            sent: total.sent + snapshot.sent,
            received: total.received + snapshot.received,
            sends_made: total.sends_made + snapshot.sends_made,
            acks_seen: total.acks_seen + snapshot.acks_seen,
            recent_ack_p50_ms: match (total.recent_ack_p50_ms, snapshot.recent_ack_p50_ms) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
        })
    }
}

pub struct Worker {
    pub name: String,
    commands_tx: mpsc::UnboundedSender<Command>,
    /// The child process, when the worker is one; its pid is what the resource sampler reads.
    child: Option<Child>,
}

impl Worker {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    pub fn send(&self, command: Command) -> anyhow::Result<()> {
        self.commands_tx.send(command).map_err(|_| anyhow::anyhow!("worker {} is gone", self.name))
    }
}

/// Every worker of a run, and one channel carrying all their events tagged with the worker's index.
pub struct WorkerPool {
    pub workers: Vec<Worker>,
    events_tx: mpsc::UnboundedSender<(usize, Event)>,
    events_rx: mpsc::UnboundedReceiver<(usize, Event)>,
    tasks: JoinSet<()>,
}

impl Default for WorkerPool {
    fn default() -> Self {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        WorkerPool { workers: Vec::new(), events_tx, events_rx, tasks: JoinSet::new() }
    }
}

impl WorkerPool {
    /// `executable worker`, talking JSON lines over stdin/stdout; its stderr is ours. Returns the worker's index.
    pub fn spawn_process(&mut self, executable: &Path, name: &str) -> anyhow::Result<usize> {
        let mut child = tokio::process::Command::new(executable)
            .arg("worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("failed to start worker {}", executable.display()))?;
        let index = self.workers.len();
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (commands_tx, mut commands_rx) = mpsc::unbounded_channel::<Command>();
        self.tasks.spawn(async move {
            while let Some(command) = commands_rx.recv().await {
                let mut line = serde_json::to_string(&command).expect("commands serialize");
                line.push('\n');
                if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                    return;
                }
            }
        });
        let events_tx = self.events_tx.clone();
        let worker_name = name.to_owned();
        self.tasks.spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            loop {
                let event = match lines.next_line().await {
                    Ok(Some(line)) => serde_json::from_str(&line).unwrap_or_else(|error| Event::Failed { message: format!("bad event line from {worker_name}: {error}") }),
                    Ok(None) | Err(_) => Event::Failed { message: format!("worker {worker_name} exited") },
                };
                let ended = matches!(&event, Event::Failed { message } if message.ends_with("exited"));
                if events_tx.send((index, event)).is_err() || ended {
                    return;
                }
            }
        });
        self.workers.push(Worker { name: name.to_owned(), commands_tx, child: Some(child) });
        Ok(index)
    }

    /// The same worker loop as a task here: no pid to sample, but no binary needed (the smoke test).
    pub fn spawn_in_process(&mut self, name: &str) -> usize {
        let index = self.workers.len();
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let (worker_events_tx, mut worker_events_rx) = mpsc::unbounded_channel();
        self.tasks.spawn(crate::worker::run_worker(commands_rx, worker_events_tx));
        let events_tx = self.events_tx.clone();
        self.tasks.spawn(async move {
            while let Some(event) = worker_events_rx.recv().await {
                if events_tx.send((index, event)).is_err() {
                    return;
                }
            }
        });
        self.workers.push(Worker { name: name.to_owned(), commands_tx, child: None });
        index
    }

    /// Waits for a `Ready` from each of `indices`; any failure to connect is an error (the run would be lopsided).
    pub async fn wait_ready(&mut self, indices: &[usize]) -> anyhow::Result<usize> {
        let mut waiting: Vec<usize> = indices.to_vec();
        let mut connected_total = 0;
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        while !waiting.is_empty() {
            let (index, event) = tokio::time::timeout_at(deadline, self.events_rx.recv())
                .await
                .context("workers did not get ready in time")?
                .context("every worker is gone")?;
            match event {
                Event::Ready { connected, failed, first_error } => {
                    if failed > 0 {
                        bail!("worker {}: {failed} of {} failed to connect; first: {}", self.workers[index].name, connected + failed, first_error.unwrap_or_default());
                    }
                    connected_total += connected;
                    waiting.retain(|waiting_index| *waiting_index != index);
                }
                Event::Failed { message } => bail!("worker {}: {message}", self.workers[index].name),
                Event::Progress { .. } | Event::PhaseDone { .. } | Event::ConnectProgress { .. } | Event::Pinged { .. } => {}
            }
        }
        Ok(connected_total)
    }

    /// Waits for `PhaseDone` from each of `indices`, printing combined progress on stderr once a second.
    pub async fn collect_phase(&mut self, indices: &[usize], label: &str, timeout: std::time::Duration) -> anyhow::Result<Vec<WorkerPhaseResult>> {
        Ok(self.collect_phase_watching(indices, label, timeout, |_| None).await?.0)
    }

    /// As `collect_phase`, and after each progress event asks `stop_early` about the workers' combined
    /// progress; once it names a reason, every worker of the phase is told to abort and report what it has.
    pub async fn collect_phase_watching(
        &mut self,
        indices: &[usize],
        label: &str,
        timeout: std::time::Duration,
        mut stop_early: impl FnMut(&CombinedProgress) -> Option<String>,
    ) -> anyhow::Result<(Vec<WorkerPhaseResult>, Option<String>)> {
        let mut results = Vec::new();
        let mut progress = vec![ProgressSnapshot::default(); self.workers.len()];
        let mut stopped_because = None;
        let mut last_print = tokio::time::Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        while results.len() < indices.len() {
            let (index, event) = self.next_event_until(deadline).await.with_context(|| format!("{label}: workers did not finish in time"))?;
            match event {
                Event::PhaseDone { result } if indices.contains(&index) => results.push(result),
                Event::Progress { progress: snapshot } => {
                    progress[index] = snapshot;
                    let combined = CombinedProgress::of(indices.iter().map(|&index| &progress[index]));
                    if last_print.elapsed() >= std::time::Duration::from_secs(1) {
                        eprintln!("  {label}: {} measured sends, {} message frames received", combined.sent, combined.received);
                        last_print = tokio::time::Instant::now();
                    }
                    if stopped_because.is_none()
                        && let Some(reason) = stop_early(&combined)
                    {
                        eprintln!("  {label}: stopping early: {reason}");
                        for &index in indices {
                            self.workers[index].send(Command::AbortPhase)?;
                        }
                        stopped_because = Some(reason);
                    }
                }
                Event::Failed { message } => bail!("worker {}: {message}", self.workers[index].name),
                _ => {}
            }
        }
        Ok((results, stopped_because))
    }

    /// The next event from any worker, or an error once `deadline` passes or every worker is gone.
    pub async fn next_event_until(&mut self, deadline: tokio::time::Instant) -> anyhow::Result<(usize, Event)> {
        tokio::time::timeout_at(deadline, self.events_rx.recv()).await.context("deadline passed")?.context("every worker is gone")
    }

    /// Asks every worker to quit and waits briefly for child processes; the rest die with their handles.
    pub async fn shut_down(mut self) {
        for worker in &self.workers {
            let _ = worker.send(Command::Quit);
        }
        for worker in &mut self.workers {
            if let Some(child) = worker.child.as_mut() {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), child.wait()).await;
            }
        }
        self.tasks.abort_all();
    }
}
