//! Coalesces delivered watermarks from the delivery and sync paths into periodic receipt frames and writes.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use schemas::ReceiptKind;
use store::{MembershipCache, Receipts};
use subjects::Id;
use tokio_util::sync::CancellationToken;

use crate::receipts::{announce, Audience, WatermarkUpdate};

/// (conversation, user) pairs noted between two flushes; beyond this many, new pairs wait for the next interval's notes.
const MAX_PENDING_PAIRS: usize = 200_000;

/// Watermark writes and announcements in flight at once during a flush.
const FLUSH_CONCURRENCY: usize = 64;

/// Beyond this many remembered (conversation, user) delivered watermarks the memory starts over;
/// forgetting only costs one repeated announcement.
const MAX_ANNOUNCED: usize = 100_000;

/// How often the coalescer announces and how often it stores delivered watermarks.
#[derive(Debug, Clone, Copy)]
pub struct CoalescerTiming {
    pub announce_interval: Duration,
    /// Delivered watermarks are the bulk of all watermark moves (every message moves every
    /// member's), and a stored one is only needed after a restart: they are stored less often.
    pub store_interval: Duration,
}

/// One user's delivered watermark in one conversation since the last flush.
struct PendingDelivery {
    seq: u64,
    /// The device that reached `seq`: the receipt frame names it.
    device: Id,
    audience: Audience,
}

#[derive(Default)]
struct Pending {
    by_conversation: HashMap<Id, HashMap<Id, PendingDelivery>>,
    pairs: usize,
}

/// Where the delivery and sync paths note what a device now holds. A note is a short lock and
/// a map update, with no task wake-up and no allocation after the first note of a
/// (conversation, user) in an interval: it runs once per delivered message.
#[derive(Clone, Default)]
pub struct DeliveredSink {
    pending: Arc<Mutex<Pending>>,
}

impl DeliveredSink {
    /// `device` of `user` holds `conversation` up to `seq`. `senders` wrote the messages this
    /// covers and are the ones told; None (not known) tells every member.
    pub fn record<'a>(&self, conversation: &Id, user: &Id, device: &Id, seq: u64, senders: Option<impl IntoIterator<Item = &'a Id>>) {
        let mut pending = self.pending.lock().expect("delivered sink lock poisoned");
        let pending = &mut *pending;
        let by_user = match pending.by_conversation.get_mut(conversation) {
            Some(by_user) => by_user,
            None if pending.pairs >= MAX_PENDING_PAIRS => return,
            None => pending.by_conversation.entry(conversation.clone()).or_default(),
        };
        match by_user.get_mut(user) {
            Some(noted) => {
                if seq > noted.seq {
                    noted.seq = seq;
                    if noted.device != *device {
                        noted.device = device.clone();
                    }
                }
                match (&mut noted.audience, senders) {
                    (Audience::Members, _) => {}
                    (audience, None) => *audience = Audience::Members,
                    (Audience::Only(known), Some(senders)) => {
                        for sender in senders {
                            if !known.contains(sender) {
                                known.insert(sender.clone());
                            }
                        }
                    }
                }
            }
            None if pending.pairs >= MAX_PENDING_PAIRS => {}
            None => {
                let audience = match senders {
                    Some(senders) => Audience::Only(senders.into_iter().cloned().collect::<BTreeSet<Id>>()),
                    None => Audience::Members,
                };
                by_user.insert(user.clone(), PendingDelivery { seq, device: device.clone(), audience });
                pending.pairs += 1;
            }
        }
    }

    fn take(&self) -> Pending {
        std::mem::take(&mut *self.pending.lock().expect("delivered sink lock poisoned"))
    }
}

/// Starts the task that announces and stores what the sink collected.
pub fn start_coalescer(
    receipts: Receipts,
    membership: Arc<MembershipCache>,
    nats: async_nats::Client,
    timing: CoalescerTiming,
    shutdown: CancellationToken,
) -> (DeliveredSink, tokio::task::JoinHandle<()>) {
    let sink = DeliveredSink::default();
    let coalescer = Coalescer { sink: sink.clone(), receipts, membership, nats, announced: HashMap::new(), to_store: HashMap::new() };
    let task = tokio::spawn(coalescer.run(timing, shutdown));
    (sink, task)
}

type UserKey = (Id, Id);

struct Coalescer {
    sink: DeliveredSink,
    receipts: Receipts,
    membership: Arc<MembershipCache>,
    nats: async_nats::Client,
    /// The highest delivered `seq` this gateway announced per (conversation, user): announcing is
    /// decided here, not by the store, so it need not wait for the slower writes.
    announced: HashMap<UserKey, u64>,
    to_store: HashMap<UserKey, u64>,
}

impl Coalescer {
    async fn run(mut self, timing: CoalescerTiming, shutdown: CancellationToken) {
        let mut announce_ticker = tokio::time::interval(timing.announce_interval);
        announce_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut store_ticker = tokio::time::interval(timing.store_interval);
        store_ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = announce_ticker.tick() => self.announce().await,
                _ = store_ticker.tick() => self.store().await,
                _ = shutdown.cancelled() => break,
            }
        }
        // Whatever was seen before shutdown is still worth keeping.
        self.announce().await;
        self.store().await;
    }

    async fn announce(&mut self) {
        let mut updates = Vec::new();
        for (conversation, by_user) in self.sink.take().by_conversation {
            for (user, noted) in by_user {
                let key = (conversation.clone(), user.clone());
                let stored = self.to_store.entry(key.clone()).or_insert(0);
                *stored = (*stored).max(noted.seq);
                if self.announced.len() >= MAX_ANNOUNCED {
                    self.announced.clear();
                }
                let announced = self.announced.entry(key).or_insert(0);
                if noted.seq > *announced {
                    *announced = noted.seq;
                    updates.push(WatermarkUpdate {
                        conversation: conversation.clone(),
                        user,
                        device: noted.device,
                        kind: ReceiptKind::Delivered,
                        seq: noted.seq,
                        audience: noted.audience,
                    });
                }
            }
        }
        let (membership, nats) = (&*self.membership, &self.nats);
        futures::stream::iter(updates)
            .for_each_concurrent(FLUSH_CONCURRENCY, |update| async move {
                if let Err(error) = announce(membership, nats, &update).await {
                    tracing::warn!(%error, conversation = %update.conversation, "failed to announce a delivery");
                }
            })
            .await;
    }

    async fn store(&mut self) {
        let receipts = &self.receipts;
        futures::stream::iter(self.to_store.drain())
            .for_each_concurrent(FLUSH_CONCURRENCY, |((conversation, user), seq)| async move {
                if let Err(error) = receipts.advance_user(&conversation, &user, ReceiptKind::Delivered, seq).await {
                    tracing::warn!(%error, %conversation, "failed to store a delivered watermark; a later one will cover it");
                }
            })
            .await;
    }
}
