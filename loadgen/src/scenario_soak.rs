//! The soak scenario: clients connect, sync, chat and disconnect in cycles; memory and open files of every process are sampled after each cycle, and every message is accounted for at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use schemas::{ClientFrame, ServerFrame};
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::plan::{Population, device_name, user_name};
use crate::system_under_test::Target;

/// One client's whole cycle (connect, sync, send, see its own message, close) must fit in this.
const CYCLE_TIMEOUT: Duration = Duration::from_secs(60);
/// After a cycle's sockets close, the processes get this long to let go of them before the sample.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct SoakOptions {
    pub population: Population,
    pub cycles: usize,
}

/// One process after one cycle.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessSample {
    pub rss_kib: u64,
    pub open_files: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessTrend {
    pub name: String,
    /// Mean RSS over the second quarter of the cycles (after warm-up) and over the last quarter.
    pub early_rss_mib: f64,
    pub late_rss_mib: f64,
    pub growth_percent: f64,
    pub max_rss_mib: f64,
    pub first_open_files: usize,
    pub last_open_files: usize,
    pub max_open_files: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SoakReport {
    pub clients: usize,
    pub cycles: usize,
    pub connections_opened: usize,
    pub messages_sent: usize,
    /// Every client's final `sync` must hold every `seq` of its group exactly once.
    pub messages_missing: usize,
    pub duplicate_frames: usize,
    pub seconds: f64,
    pub trends: Vec<ProcessTrend>,
    /// Per cycle, per process (in `trends` order).
    pub samples: Vec<Vec<ProcessSample>>,
}

/// What one client holds of its group's log between cycles.
#[derive(Default, Clone)]
struct Held {
    seqs: BTreeSet<u64>,
    duplicates: usize,
}

impl Held {
    /// A `message` frame arrived: a `seq` already held is a duplicate on screen.
    fn record(&mut self, seq: u64) {
        if !self.seqs.insert(seq) {
            self.duplicates += 1;
        }
    }
}

pub async fn run_soak(target: &Target, options: &SoakOptions) -> anyhow::Result<SoakReport> {
    let population = options.population;
    anyhow::ensure!(options.cycles >= 4, "a soak needs at least 4 cycles to compare its early and late quarters");
    eprintln!("soak: creating {} groups of {}", population.groups, population.group_size);
    let groups = crate::system_under_test::create_groups(target, population, population.group_size).await?;
    let started = std::time::Instant::now();
    let mut held: Vec<Held> = vec![Held::default(); population.clients()];
    let mut samples = Vec::with_capacity(options.cycles);
    for cycle in 0..options.cycles {
        let cycle_runs = (0..population.clients()).map(|client| {
            let conversation = groups[population.group_of(client)].clone();
            let before = held[client].clone();
            async move { run_cycle(target, client, &conversation, cycle, before).await.with_context(|| format!("client {client}, cycle {cycle}")) }
        });
        let outcomes = futures::future::join_all(cycle_runs).await;
        for (client, outcome) in outcomes.into_iter().enumerate() {
            held[client] = outcome?;
        }
        let sample = settled_sample(&target.processes).await;
        eprintln!(
            "  soak cycle {}/{}: {}",
            cycle + 1,
            options.cycles,
            target.processes.iter().zip(&sample).map(|((name, _), sample)| format!("{name} {:.1} MiB {} fds", sample.rss_kib as f64 / 1024.0, sample.open_files)).collect::<Vec<_>>().join(", ")
        );
        samples.push(sample);
    }
    // A last reconnect of everyone: what each holds after its sync is what it would show.
    let mut messages_missing = 0;
    let expected_per_group = (population.group_size * options.cycles) as u64;
    for client in 0..population.clients() {
        let conversation = &groups[population.group_of(client)];
        let final_held = sync_only(target, client, conversation, held[client].clone()).await?;
        messages_missing += (1..=expected_per_group).filter(|seq| !final_held.seqs.contains(seq)).count();
        held[client] = final_held;
    }
    let trends = trends_of(&target.processes, &samples);
    Ok(SoakReport {
        clients: population.clients(),
        cycles: options.cycles,
        connections_opened: population.clients() * (options.cycles + 1),
        messages_sent: population.clients() * options.cycles,
        messages_missing,
        duplicate_frames: held.iter().map(|held| held.duplicates).sum(),
        seconds: started.elapsed().as_secs_f64(),
        trends,
        samples,
    })
}

/// Connect with `?resume=1`, sync from what is held, send one message, wait for its own echo, close.
async fn run_cycle(target: &Target, client: usize, conversation: &str, cycle: usize, mut held: Held) -> anyhow::Result<Held> {
    tokio::time::timeout(CYCLE_TIMEOUT, async {
        let mut socket = connect_and_sync(target, client, conversation, &held).await?;
        let client_msg_id = format!("soak-{client}-{cycle}");
        let mut sent = false;
        while let Some(frame) = socket.next().await {
            let WsMessage::Text(text) = frame? else { continue };
            match serde_json::from_str::<ServerFrame>(text.as_str())? {
                ServerFrame::Message { message } if message.conversation_id == conversation => {
                    held.record(message.seq);
                    if message.client_msg_id == client_msg_id {
                        break;
                    }
                }
                ServerFrame::Synced { .. } if !sent => {
                    let send = serde_json::json!({"type": "send", "id": "m", "conversation_id": conversation, "client_msg_id": client_msg_id, "body": {"text": crate::natter_clients::MESSAGE_TEXT}});
                    socket.send(WsMessage::text(send.to_string())).await?;
                    sent = true;
                }
                ServerFrame::Error { code, message, .. } => bail!("{code:?}: {message}"),
                _ => {}
            }
        }
        let _ = socket.close(None).await;
        anyhow::Ok(held)
    })
    .await
    .context("the cycle did not finish in time")?
}

/// Connect, sync from what is held, read until `synced`, close.
async fn sync_only(target: &Target, client: usize, conversation: &str, mut held: Held) -> anyhow::Result<Held> {
    let mut socket = connect_and_sync(target, client, conversation, &held).await.context("final connect")?;
    tokio::time::timeout(CYCLE_TIMEOUT, async {
        while let Some(frame) = socket.next().await {
            let WsMessage::Text(text) = frame? else { continue };
            match serde_json::from_str::<ServerFrame>(text.as_str())? {
                ServerFrame::Message { message } if message.conversation_id == conversation => {
                    held.record(message.seq);
                }
                ServerFrame::Synced { .. } => return anyhow::Ok(()),
                _ => {}
            }
        }
        bail!("socket ended before synced")
    })
    .await
    .context("final sync timed out")??;
    let _ = socket.close(None).await;
    Ok(held)
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects the client's device with `?resume=1` and asks for everything after the newest `seq` it holds.
async fn connect_and_sync(target: &Target, client: usize, conversation: &str, held: &Held) -> anyhow::Result<Socket> {
    let url = target.ws_url(client % target.gateways.len(), &user_name(client), &device_name(client), true);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.context("connect")?;
    let cursor = held.seqs.last().copied().unwrap_or(0);
    let sync = ClientFrame::Sync { id: Some(serde_json::json!("s")), cursors: BTreeMap::from([(conversation.to_owned(), cursor)]) };
    socket.send(WsMessage::text(serde_json::to_string(&sync)?)).await?;
    Ok(socket)
}

/// Samples every process once its open files stop falling (closed sockets are released asynchronously), or after the settle timeout.
async fn settled_sample(processes: &[(String, u32)]) -> Vec<ProcessSample> {
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    let mut previous = sample(processes);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let current = sample(processes);
        let settled = current.iter().zip(&previous).all(|(now, before)| now.open_files >= before.open_files);
        if settled || tokio::time::Instant::now() >= deadline {
            return current;
        }
        previous = current;
    }
}

fn sample(processes: &[(String, u32)]) -> Vec<ProcessSample> {
    processes
        .iter()
        .map(|(_, pid)| ProcessSample {
            rss_kib: crate::resources::rss_kib(*pid).unwrap_or(0),
            open_files: std::fs::read_dir(format!("/proc/{pid}/fd")).map(|entries| entries.count()).unwrap_or(0),
        })
        .collect()
}

fn trends_of(processes: &[(String, u32)], samples: &[Vec<ProcessSample>]) -> Vec<ProcessTrend> {
    let quarter = (samples.len() / 4).max(1);
    let mean_rss_mib = |range: std::ops::Range<usize>, index: usize| {
        let slice = &samples[range];
        slice.iter().map(|cycle| cycle[index].rss_kib as f64).sum::<f64>() / slice.len() as f64 / 1024.0
    };
    processes
        .iter()
        .enumerate()
        .map(|(index, (name, _))| {
            // The first quarter is warm-up (caches, allocator arenas, JetStream blocks): compare the second with the last.
            let early = mean_rss_mib(quarter..2 * quarter, index);
            let late = mean_rss_mib(samples.len() - quarter..samples.len(), index);
            ProcessTrend {
                name: name.clone(),
                early_rss_mib: early,
                late_rss_mib: late,
                growth_percent: if early > 0.0 { 100.0 * (late - early) / early } else { 0.0 },
                max_rss_mib: samples.iter().map(|cycle| cycle[index].rss_kib).max().unwrap_or(0) as f64 / 1024.0,
                first_open_files: samples.first().map_or(0, |cycle| cycle[index].open_files),
                last_open_files: samples.last().map_or(0, |cycle| cycle[index].open_files),
                max_open_files: samples.iter().map(|cycle| cycle[index].open_files).max().unwrap_or(0),
            }
        })
        .collect()
}

/// The report's own table.
pub fn summary_markdown(report: &SoakReport) -> String {
    let mut text = format!(
        "{} clients × {} cycles of connect → sync → send → see it → close ({} connections, {} messages) in {:.0} s; \
         after a final sync: **{} missing**, {} duplicate frames.\n\n",
        report.clients, report.cycles, report.connections_opened, report.messages_sent, report.seconds, report.messages_missing, report.duplicate_frames
    );
    text.push_str("| process | RSS 2nd quarter MiB | RSS last quarter MiB | growth | max RSS MiB | open files first / last / max |\n|---|---:|---:|---:|---:|---|\n");
    for trend in &report.trends {
        text.push_str(&format!(
            "| {} | {:.1} | {:.1} | {:+.1} % | {:.1} | {} / {} / {} |\n",
            trend.name, trend.early_rss_mib, trend.late_rss_mib, trend.growth_percent, trend.max_rss_mib, trend.first_open_files, trend.last_open_files, trend.max_open_files
        ));
    }
    text
}
