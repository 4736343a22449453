//! The catch-up scenario: a device is offline while 1,000 messages arrive over 50 conversations; time from reconnect to `synced`.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use schemas::{ClientFrame, ServerFrame};
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::system_under_test::Target;

const SENDER: &str = "csender";
const READER: &str = "creader";
const READER_DEVICE: &str = "cphone";
const SEND_CONCURRENCY: usize = 16;
/// A catch-up that takes longer than this is a failure, not a slow result.
const SYNC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CatchupOptions {
    pub conversations: usize,
    pub messages: usize,
    pub repeats: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CatchupRound {
    /// From starting the TCP connect to the `synced` frame, ms.
    pub reconnect_to_synced_ms: f64,
    /// From writing `sync` to the `synced` frame, ms.
    pub sync_to_synced_ms: f64,
    pub messages_received: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CatchupReport {
    pub conversations: usize,
    pub messages_per_round: usize,
    pub rounds: Vec<CatchupRound>,
    pub median_reconnect_to_synced_ms: f64,
    pub max_reconnect_to_synced_ms: f64,
}

pub async fn run_catchup(target: &Target, options: &CatchupOptions) -> anyhow::Result<CatchupReport> {
    let http = reqwest::Client::new();
    let sender_token = target.token(SENDER);
    eprintln!("catch-up: creating {} groups of the sender and the reader", options.conversations);
    let mut conversations = Vec::new();
    for group in 0..options.conversations {
        let response = http
            .post(format!("{}/v1/conversations", target.http_url(0)))
            .bearer_auth(&sender_token)
            .json(&serde_json::json!({"kind": "group", "title": format!("catch-up {group}"), "members": [READER]}))
            .send()
            .await?;
        let body: serde_json::Value = response.json().await?;
        conversations.push(body["id"].as_str().context("no conversation id")?.to_owned());
    }
    let mut cursors: BTreeMap<String, u64> = conversations.iter().map(|conversation| (conversation.clone(), 0)).collect();
    let mut rounds = Vec::new();
    for round in 0..options.repeats {
        // The reader is offline: the messages go in over HTTP from the sender.
        let sends = futures::stream::iter(0..options.messages).map(|index| {
            let http = http.clone();
            let token = sender_token.clone();
            let conversation = conversations[index % conversations.len()].clone();
            async move {
                let response = http
                    .post(format!("{}/v1/messages", target.http_url(0)))
                    .bearer_auth(&token)
                    .json(&serde_json::json!({"conversation_id": conversation, "client_msg_id": format!("c{round}-{index}"), "body": {"text": crate::natter_clients::MESSAGE_TEXT}}))
                    .send()
                    .await?;
                anyhow::ensure!(response.status().is_success(), "send: {}", response.status());
                anyhow::Ok(())
            }
        });
        for outcome in sends.buffer_unordered(SEND_CONCURRENCY).collect::<Vec<_>>().await {
            outcome?;
        }
        let outcome = reconnect_and_sync(target, &cursors).await?;
        eprintln!("  catch-up round {}: {} messages, reconnect → synced {:.1} ms (sync → synced {:.1} ms)", round + 1, outcome.0.messages_received, outcome.0.reconnect_to_synced_ms, outcome.0.sync_to_synced_ms);
        if outcome.0.messages_received != options.messages {
            bail!("catch-up round {}: expected {} messages, got {}", round + 1, options.messages, outcome.0.messages_received);
        }
        cursors = outcome.1;
        rounds.push(outcome.0);
    }
    let mut times: Vec<f64> = rounds.iter().map(|round| round.reconnect_to_synced_ms).collect();
    times.sort_by(f64::total_cmp);
    Ok(CatchupReport {
        conversations: options.conversations,
        messages_per_round: options.messages,
        median_reconnect_to_synced_ms: times.get(times.len() / 2).copied().unwrap_or_default(),
        max_reconnect_to_synced_ms: times.last().copied().unwrap_or_default(),
        rounds,
    })
}

/// Connects with `?resume=1`, sends `sync` with the cursors, reads until `synced`, then disconnects.
async fn reconnect_and_sync(target: &Target, cursors: &BTreeMap<String, u64>) -> anyhow::Result<(CatchupRound, BTreeMap<String, u64>)> {
    let started = Instant::now();
    let url = target.ws_url(0, READER, READER_DEVICE, true);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.context("catch-up: connect")?;
    let sync = ClientFrame::Sync { id: Some(serde_json::json!("s")), cursors: cursors.clone() };
    let sync_sent = Instant::now();
    socket.send(WsMessage::text(serde_json::to_string(&sync)?)).await?;
    let mut messages_received = 0;
    let synced_cursors = tokio::time::timeout(SYNC_TIMEOUT, async {
        while let Some(frame) = socket.next().await {
            let WsMessage::Text(text) = frame? else { continue };
            match serde_json::from_str::<ServerFrame>(text.as_str())? {
                ServerFrame::Message { .. } => messages_received += 1,
                ServerFrame::Synced { cursors, .. } => return Ok(cursors),
                ServerFrame::Error { code, message, .. } => bail!("sync failed: {code:?} {message}"),
                _ => {}
            }
        }
        bail!("socket ended before synced")
    })
    .await
    .context("catch-up: no synced in time")??;
    let round = CatchupRound { reconnect_to_synced_ms: started.elapsed().as_secs_f64() * 1e3, sync_to_synced_ms: sync_sent.elapsed().as_secs_f64() * 1e3, messages_received };
    let _ = socket.close(None).await;
    Ok((round, synced_cursors))
}
