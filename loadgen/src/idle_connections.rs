//! The idle-connection side of a worker: opens its share of authenticated WebSocket connections at a bounded rate, holds them, and checks on request that each still answers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use schemas::{ClientFrame, ServerFrame};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::plan::Event;
use crate::system_under_test::Target;

/// Connects in flight at once per worker: the rate limit is what paces the run, this only keeps a slow gateway from piling up sockets.
const CONNECT_CONCURRENCY: usize = 64;
/// One connect (TCP + upgrade) that takes longer than this counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the worker waits for every live connection to answer a `ping`.
const PING_DEADLINE: Duration = Duration::from_secs(60);
/// How long closing every connection may take before the rest are simply dropped.
const CLOSE_DEADLINE: Duration = Duration::from_secs(15);
/// Condition checks while waiting on counters (pongs, in-flight connects): short against the deadlines above.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Which connections a worker opens, and how fast. Tokens are minted here, as the coordinator would, from the shared secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdleConnectionsPlan {
    pub gateways: Vec<SocketAddr>,
    pub jwt_secret: String,
    /// This worker opens connections `first_connection .. first_connection + count`; connection `n`
    /// is user `lgi<n>` with device `lgid<n>`, on gateway `n % gateways`, from source address `n % source_ips`.
    pub first_connection: usize,
    pub count: usize,
    pub source_ips: Vec<String>,
    pub connects_per_second: f64,
}

pub fn idle_user_name(connection: usize) -> String {
    format!("lgi{connection}")
}

/// What every connection task is told to do; a watch channel, so 18,000 tasks share one value instead of 18,000 queues.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Instruction {
    Hold,
    /// Send a `ping` frame with this id and count the matching `pong`.
    Ping(u64),
    Close,
}

#[derive(Default)]
struct Counters {
    connected: AtomicUsize,
    failed: AtomicUsize,
    /// Connections the server closed (or that broke) while we meant to hold them.
    dropped: AtomicUsize,
    /// `pong`s of the current ping round.
    answered: AtomicUsize,
    first_error: Mutex<Option<String>>,
}

impl Counters {
    fn note_error(&self, what: impl FnOnce() -> String) {
        let mut first_error = self.first_error.lock().expect("error lock is never poisoned");
        if first_error.is_none() {
            *first_error = Some(what());
        }
    }
}

pub struct IdleConnections {
    counters: Arc<Counters>,
    instructions_tx: watch::Sender<Instruction>,
    tasks: JoinSet<()>,
    ping_rounds: u64,
}

impl IdleConnections {
    /// Opens every connection of `plan` on a fixed schedule (`i / rate`), reporting progress once a second; returns when each has connected or failed.
    pub async fn open_all(plan: IdleConnectionsPlan, events_tx: &mpsc::UnboundedSender<Event>) -> IdleConnections {
        let counters = Arc::new(Counters::default());
        let (instructions_tx, _) = watch::channel(Instruction::Hold);
        let target = Target { gateways: plan.gateways.clone(), nats_url: String::new(), jwt_secret: plan.jwt_secret.clone(), processes: Vec::new() };
        // Small buffers: an idle client reads a few tiny frames a minute, and tungstenite's 128 KiB default would be
        // most of this worker's memory. This changes the client side only; the gateway's sockets are what is measured.
        let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
        let in_flight = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
        let progress = tokio::spawn(report_connect_progress(counters.clone(), events_tx.clone()));
        let started = tokio::time::Instant::now();
        let mut tasks = JoinSet::new();
        for offset in 0..plan.count {
            tokio::time::sleep_until(started + Duration::from_secs_f64(offset as f64 / plan.connects_per_second.max(1e-3))).await;
            let permit = in_flight.clone().acquire_owned().await.expect("the semaphore is never closed");
            let connection = plan.first_connection + offset;
            let user = idle_user_name(connection);
            let ws_url = target.ws_url(connection, &user, &format!("lgid{connection}"), false);
            let source_ip = plan.source_ips[connection % plan.source_ips.len()].clone();
            let counters = counters.clone();
            let instructions_rx = instructions_tx.subscribe();
            tasks.spawn(async move {
                let connected = tokio::time::timeout(CONNECT_TIMEOUT, crate::natter_clients::connect_websocket(&ws_url, &source_ip, Some(config))).await;
                drop(permit);
                match connected {
                    Ok(Ok(socket)) => {
                        counters.connected.fetch_add(1, Ordering::Relaxed);
                        hold(socket, user, instructions_rx, counters).await;
                    }
                    Ok(Err(error)) => {
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                        counters.note_error(|| format!("{user}: {error:#}"));
                    }
                    Err(_elapsed) => {
                        counters.failed.fetch_add(1, Ordering::Relaxed);
                        counters.note_error(|| format!("{user}: no connection within {CONNECT_TIMEOUT:?}"));
                    }
                }
            });
        }
        // Every permit back means every connect has finished, one way or the other (each is bounded by CONNECT_TIMEOUT).
        let _all_permits = in_flight.acquire_many(CONNECT_CONCURRENCY as u32).await.expect("the semaphore is never closed");
        progress.abort();
        let connected = counters.connected.load(Ordering::Relaxed);
        let failed = counters.failed.load(Ordering::Relaxed);
        let _ = events_tx.send(Event::ConnectProgress { connected, failed });
        let first_error = counters.first_error.lock().expect("error lock is never poisoned").clone();
        let _ = events_tx.send(Event::Ready { connected, failed, first_error });
        IdleConnections { counters, instructions_tx, tasks, ping_rounds: 0 }
    }

    /// Every live connection sends a `ping` frame; returns (answered, silent, dropped so far) once all live ones answered or the deadline passed.
    pub async fn ping_all(&mut self) -> Event {
        self.ping_rounds += 1;
        self.counters.answered.store(0, Ordering::Relaxed);
        let _ = self.instructions_tx.send(Instruction::Ping(self.ping_rounds));
        let give_up_at = tokio::time::Instant::now() + PING_DEADLINE;
        let live = || self.counters.connected.load(Ordering::Relaxed).saturating_sub(self.counters.dropped.load(Ordering::Relaxed));
        while self.counters.answered.load(Ordering::Relaxed) < live() && tokio::time::Instant::now() < give_up_at {
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        let _ = self.instructions_tx.send(Instruction::Hold);
        let answered = self.counters.answered.load(Ordering::Relaxed);
        Event::Pinged { answered, silent: live().saturating_sub(answered), dropped: self.counters.dropped.load(Ordering::Relaxed) }
    }

    /// Closes every connection with a close frame (bounded), then drops whatever is left.
    pub async fn close(mut self) {
        let _ = self.instructions_tx.send(Instruction::Close);
        let _ = tokio::time::timeout(CLOSE_DEADLINE, async { while self.tasks.join_next().await.is_some() {} }).await;
        self.tasks.abort_all();
    }
}

/// One connection's life: reads (which also answers the gateway's WebSocket pings) until told to ping or close.
async fn hold(mut socket: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, user: String, mut instructions_rx: watch::Receiver<Instruction>, counters: Arc<Counters>) {
    let mut awaited_pong = None;
    loop {
        tokio::select! {
            frame = socket.next() => match frame {
                Some(Ok(WsMessage::Text(text))) => match serde_json::from_str::<ServerFrame>(text.as_str()) {
                    Ok(ServerFrame::Pong { id }) if id.is_some() && id == awaited_pong => {
                        awaited_pong = None;
                        counters.answered.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(ServerFrame::Error { code, message, .. }) => counters.note_error(|| format!("{user}: error frame {code:?}: {message}")),
                    _ => {}
                },
                Some(Ok(WsMessage::Close(frame))) => {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                    counters.note_error(|| format!("{user}: server closed the socket: {frame:?}"));
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                    counters.note_error(|| format!("{user}: socket error: {error}"));
                    return;
                }
                None => {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                    counters.note_error(|| format!("{user}: socket ended"));
                    return;
                }
            },
            changed = instructions_rx.changed() => {
                // The worker is gone: so is the reason to hold the socket.
                if changed.is_err() {
                    return;
                }
                let instruction = *instructions_rx.borrow_and_update();
                match instruction {
                    Instruction::Hold => {}
                    Instruction::Ping(round) => {
                        let id = serde_json::json!(round);
                        awaited_pong = Some(id.clone());
                        let frame = serde_json::to_string(&ClientFrame::Ping { id: Some(id) }).expect("client frames serialize");
                        if let Err(error) = socket.send(WsMessage::text(frame)).await {
                            counters.dropped.fetch_add(1, Ordering::Relaxed);
                            counters.note_error(|| format!("{user}: ping failed: {error}"));
                            return;
                        }
                    }
                    Instruction::Close => {
                        let _ = socket.close(None).await;
                        return;
                    }
                }
            }
        }
    }
}

async fn report_connect_progress(counters: Arc<Counters>, events_tx: mpsc::UnboundedSender<Event>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let event = Event::ConnectProgress { connected: counters.connected.load(Ordering::Relaxed), failed: counters.failed.load(Ordering::Relaxed) };
        if events_tx.send(event).is_err() {
            return;
        }
    }
}
