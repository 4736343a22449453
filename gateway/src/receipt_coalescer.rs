//! Coalesces watermark moves from the send, delivery and sync paths into periodic writes and receipt frames.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use schemas::ReceiptKind;
use store::{MembershipCache, Receipts};
use subjects::Id;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::receipts::{announce, apply, Audience, WatermarkSink, WatermarkUpdate};

/// Watermark changes waiting for the next flush; beyond this many distinct keys, updates are dropped (a later one covers them).
const COALESCER_QUEUE: usize = 65_536;

/// Watermark writes in flight at once during a flush.
const FLUSH_CONCURRENCY: usize = 64;

/// Beyond this many remembered (conversation, user) delivered watermarks the memory starts over;
/// forgetting only costs one repeated announcement.
const MAX_ANNOUNCED: usize = 100_000;

/// How often the coalescer announces and how often it stores delivered watermarks.
#[derive(Debug, Clone, Copy)]
pub struct CoalescerTiming {
    /// Reads (stored and announced) and delivered announcements.
    pub flush_interval: Duration,
    /// Delivered watermarks are stored this often: they are the bulk of all watermark moves
    /// (every message moves every member's), and a stored one is only needed after a restart.
    pub delivered_store_interval: Duration,
}

/// Starts the task that writes coalesced watermarks: one write per key per interval, not one per message.
pub fn start_coalescer(
    receipts: Receipts,
    membership: Arc<MembershipCache>,
    nats: async_nats::Client,
    timing: CoalescerTiming,
    shutdown: CancellationToken,
) -> (WatermarkSink, tokio::task::JoinHandle<()>) {
    let (updates_tx, updates_rx) = mpsc::channel(COALESCER_QUEUE);
    let coalescer = Coalescer { receipts, membership, nats, pending: HashMap::new(), announced_delivered: HashMap::new(), delivered_to_store: HashMap::new() };
    let task = tokio::spawn(coalescer.run(timing, updates_rx, shutdown));
    (WatermarkSink { updates_tx }, task)
}

type WatermarkKey = (Id, Id, Id, ReceiptKind);
type UserKey = (Id, Id);

struct Coalescer {
    receipts: Receipts,
    membership: Arc<MembershipCache>,
    nats: async_nats::Client,
    pending: HashMap<WatermarkKey, (u64, Audience)>,
    /// The highest delivered `seq` this gateway announced per (conversation, user): announcing is
    /// decided here, not by the store, so it need not wait for the slower delivered writes.
    announced_delivered: HashMap<UserKey, u64>,
    delivered_to_store: HashMap<UserKey, u64>,
}

impl Coalescer {
    async fn run(mut self, timing: CoalescerTiming, mut updates_rx: mpsc::Receiver<WatermarkUpdate>, shutdown: CancellationToken) {
        let mut flush_ticker = tokio::time::interval(timing.flush_interval);
        flush_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut store_ticker = tokio::time::interval(timing.delivered_store_interval);
        store_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                update = updates_rx.recv() => match update {
                    Some(update) => self.note(update),
                    None => break,
                },
                _ = flush_ticker.tick() => self.flush().await,
                _ = store_ticker.tick() => self.store_delivered().await,
                _ = shutdown.cancelled() => break,
            }
        }
        // Whatever was seen before shutdown is still worth keeping.
        self.flush().await;
        self.store_delivered().await;
    }

    fn note(&mut self, update: WatermarkUpdate) {
        let key = (update.conversation, update.user, update.device, update.kind);
        match self.pending.get_mut(&key) {
            Some((seq, audience)) => {
                *seq = (*seq).max(update.seq);
                audience.merge(update.audience);
            }
            None => {
                self.pending.insert(key, (update.seq, update.audience));
            }
        }
    }

    async fn flush(&mut self) {
        let mut reads = Vec::new();
        let mut deliveries = Vec::new();
        for ((conversation, user, device, kind), (seq, audience)) in self.pending.drain() {
            let update = WatermarkUpdate { conversation, user, device, kind, seq, audience };
            match kind {
                ReceiptKind::Read => reads.push(update),
                ReceiptKind::Delivered => {
                    let user_key = (update.conversation.clone(), update.user.clone());
                    let stored = self.delivered_to_store.entry(user_key.clone()).or_insert(0);
                    *stored = (*stored).max(seq);
                    if self.announced_delivered.len() >= MAX_ANNOUNCED {
                        self.announced_delivered.clear();
                    }
                    let announced = self.announced_delivered.entry(user_key).or_insert(0);
                    if seq > *announced {
                        *announced = seq;
                        deliveries.push(update);
                    }
                }
            }
        }
        let (receipts, membership, nats) = (&self.receipts, &*self.membership, &self.nats);
        // Keys are independent: write many at once, so a flush costs a few round trips, not one per key.
        futures::stream::iter(reads)
            .for_each_concurrent(FLUSH_CONCURRENCY, |update| async move {
                if let Err(error) = apply(receipts, membership, nats, &update).await {
                    tracing::warn!(%error, conversation = %update.conversation, "failed to write a read watermark; a later one will cover it");
                }
            })
            .await;
        futures::stream::iter(deliveries)
            .for_each_concurrent(FLUSH_CONCURRENCY, |update| async move {
                if let Err(error) = announce(membership, nats, &update).await {
                    tracing::warn!(%error, conversation = %update.conversation, "failed to announce a delivery");
                }
            })
            .await;
    }

    async fn store_delivered(&mut self) {
        let receipts = &self.receipts;
        futures::stream::iter(self.delivered_to_store.drain())
            .for_each_concurrent(FLUSH_CONCURRENCY, |((conversation, user), seq)| async move {
                if let Err(error) = receipts.advance_user(&conversation, &user, ReceiptKind::Delivered, seq).await {
                    tracing::warn!(%error, %conversation, "failed to store a delivered watermark; a later one will cover it");
                }
            })
            .await;
    }
}
