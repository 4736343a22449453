//! A worker: one role (WebSocket clients, baseline subscribers, baseline publisher or baseline fanout) driven by coordinator commands.
//!
//! The same loop runs in a child process (`natter-loadgen worker`, commands on stdin, events on
//! stdout) or as a task in the coordinator's own process (the smoke test), so both paths are one code.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::baseline::BaselinePublisher;
use crate::natter_clients::{CurrentPhase, NatterClients};
use crate::plan::{Command, Event, Phase};
use crate::recorder::Recorder;

/// How often a worker reports progress while a phase runs.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// How often a draining worker checks whether every expected frame has arrived.
const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(50);

enum Role {
    Clients(NatterClients),
    Subscribers { tasks: JoinSet<()>, expected_per_send_group: Vec<u64> },
    Publisher(BaselinePublisher),
    Fanout(JoinSet<anyhow::Result<()>>),
    Idle(crate::idle_connections::IdleConnections),
}

/// Runs until `Quit` or until the command channel closes.
pub async fn run_worker(mut commands_rx: mpsc::UnboundedReceiver<Command>, events_tx: mpsc::UnboundedSender<Event>) {
    let recorder = Arc::new(Recorder::default());
    let current_phase: CurrentPhase = Arc::new(RwLock::new(None));
    let Some(first) = commands_rx.recv().await else { return };
    let mut role = match first {
        Command::NatterClients { population, clients } => {
            let (clients, outcome) = NatterClients::connect_all(population, clients, recorder.clone(), current_phase.clone()).await;
            let _ = events_tx.send(Event::Ready { connected: outcome.connected, failed: outcome.failed, first_error: outcome.first_error });
            Role::Clients(clients)
        }
        Command::BaselineSubscribers { population, nats_url, clients } => {
            let mut expected_per_send_group = vec![0u64; population.groups];
            for spec in &clients {
                expected_per_send_group[population.group_of(spec.client)] += 1;
            }
            let (tasks, outcome) = crate::baseline::subscribe_all(&nats_url, clients, recorder.clone(), current_phase.clone()).await;
            let _ = events_tx.send(Event::Ready { connected: outcome.connected, failed: outcome.failed, first_error: outcome.first_error });
            Role::Subscribers { tasks, expected_per_send_group }
        }
        Command::BaselinePublisher { population, layout, nats_url } => match BaselinePublisher::start(population, layout, &nats_url, recorder.clone()).await {
            Ok(publisher) => {
                let _ = events_tx.send(Event::Ready { connected: 1, failed: 0, first_error: None });
                Role::Publisher(publisher)
            }
            Err(error) => {
                let _ = events_tx.send(Event::Failed { message: format!("{error:#}") });
                return;
            }
        },
        Command::BaselineFanout { population, layout, nats_url } => {
            let mut tasks = JoinSet::new();
            tasks.spawn(async move { crate::baseline::run_fanout(population, layout, &nats_url).await });
            let _ = events_tx.send(Event::Ready { connected: 1, failed: 0, first_error: None });
            Role::Fanout(tasks)
        }
        Command::IdleConnections { plan } => Role::Idle(crate::idle_connections::IdleConnections::open_all(plan, &events_tx).await),
        Command::Run { .. } | Command::AbortPhase | Command::PingAll | Command::Quit => {
            let _ = events_tx.send(Event::Failed { message: "the first command must give the worker its role".to_owned() });
            return;
        }
    };
    while let Some(command) = commands_rx.recv().await {
        match command {
            Command::Run { phase } => {
                *current_phase.write().expect("phase lock is never poisoned") = Some(phase.clone());
                let progress_task = tokio::spawn(report_progress(recorder.clone(), events_tx.clone()));
                // The phase runs to its end unless the coordinator aborts it (a capacity probe already lost);
                // either way what was measured so far is reported.
                let quit = tokio::select! {
                    () = run_phase(&role, &phase, &recorder) => false,
                    quit = wait_for_abort(&mut commands_rx) => quit,
                };
                progress_task.abort();
                // Clear the phase before taking the result, so a straggler cannot land in the next phase's numbers.
                *current_phase.write().expect("phase lock is never poisoned") = None;
                let _ = events_tx.send(Event::PhaseDone { result: recorder.take() });
                if quit {
                    break;
                }
            }
            Command::PingAll => match &mut role {
                Role::Idle(connections) => {
                    let _ = events_tx.send(connections.ping_all().await);
                }
                _ => {
                    let _ = events_tx.send(Event::Failed { message: "only idle connections answer PingAll".to_owned() });
                }
            },
            // An abort that arrives after its phase ended has nothing left to stop.
            Command::AbortPhase => {}
            Command::Quit => break,
            other => {
                let _ = events_tx.send(Event::Failed { message: format!("unexpected command {other:?}") });
            }
        }
    }
    match role {
        Role::Clients(clients) => clients.close(),
        Role::Subscribers { mut tasks, .. } => tasks.abort_all(),
        Role::Publisher(publisher) => publisher.close(),
        Role::Fanout(mut tasks) => tasks.abort_all(),
        Role::Idle(connections) => connections.close().await,
    }
}

/// Returns on `AbortPhase` (false) or when the worker should quit (true); other commands mid-phase are ignored.
async fn wait_for_abort(commands_rx: &mut mpsc::UnboundedReceiver<Command>) -> bool {
    loop {
        match commands_rx.recv().await {
            Some(Command::AbortPhase) => return false,
            Some(Command::Quit) | None => return true,
            Some(_) => {}
        }
    }
}

/// Sends (if this role sends), then waits until every frame this worker expects has come, or the drain time is up.
async fn run_phase(role: &Role, phase: &Phase, recorder: &Recorder) {
    let expected_frames = match role {
        Role::Clients(clients) => {
            clients.run_sends(phase, recorder).await;
            clients.expected_frames(phase)
        }
        Role::Subscribers { expected_per_send_group, .. } => {
            let first = phase.total_sends() - phase.measured_sends();
            (first..phase.total_sends()).map(|index| expected_per_send_group[phase.population.group_of(phase.population.sender_of(index))]).sum()
        }
        Role::Publisher(publisher) => {
            publisher.run_sends(phase, recorder).await;
            0
        }
        Role::Fanout(_) | Role::Idle(_) => 0,
    };
    let give_up_at = crate::clock::tokio_instant_at(phase.end_of_sends_unix_nanos() + (phase.drain_seconds * 1e9) as u64);
    // Polling is fine here: this is the end of a measured window, not a test waiting on a condition.
    while recorder.measured_frames() < expected_frames && tokio::time::Instant::now() < give_up_at {
        tokio::time::sleep(DRAIN_POLL_INTERVAL).await;
    }
    if matches!(role, Role::Publisher(_)) {
        while recorder.acks_recorded() < phase.measured_sends() && tokio::time::Instant::now() < give_up_at {
            tokio::time::sleep(DRAIN_POLL_INTERVAL).await;
        }
    }
}

async fn report_progress(recorder: Arc<Recorder>, events_tx: mpsc::UnboundedSender<Event>) {
    let mut ticks = tokio::time::interval(PROGRESS_INTERVAL);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        if events_tx.send(Event::Progress { progress: recorder.progress() }).is_err() {
            return;
        }
    }
}
