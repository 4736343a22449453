//! Coalesces delivered watermarks from the delivery and sync paths into periodic receipt frames and writes.
//!
//! Each (conversation, user) waits its own interval from its first note, and the coalescer wakes
//! several times per interval to handle whichever are due: work arrives in small slices instead of
//! one burst per interval. One burst of every pair at once (a few thousand receipt frames and
//! watermark writes together) used to stall the message path behind it, and was most of
//! Natter's p99 at a steady load.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use futures::StreamExt;
use schemas::ReceiptKind;
use store::{MembershipCache, Receipts};
use subjects::Id;
use tokio_util::sync::CancellationToken;

use crate::receipts::{announce, Audience, WatermarkUpdate};

/// (conversation, user) pairs noted between two flushes; beyond this many, new pairs wait for the next interval's notes.
const MAX_PENDING_PAIRS: usize = 200_000;

/// Announcements in flight at once (each is a membership lookup, cached, and a core publish).
const ANNOUNCE_CONCURRENCY: usize = 64;

/// Watermark writes in flight at once: few, so the messages being appended never queue behind many of them.
const STORE_CONCURRENCY: usize = 8;

/// Wake-ups per announce interval; a pair is announced at most this fraction of an interval late.
const SLICES_PER_INTERVAL: u32 = 8;

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
    /// The first note since this pair was last announced; the pair is due an interval later.
    first_noted: Instant,
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
                by_user.insert(user.clone(), PendingDelivery { seq, device: device.clone(), audience, first_noted: Instant::now() });
                pending.pairs += 1;
            }
        }
    }

    /// Removes the pairs first noted at or before `cutoff`.
    fn take_due(&self, cutoff: Instant) -> Vec<(Id, Id, PendingDelivery)> {
        let mut pending = self.pending.lock().expect("delivered sink lock poisoned");
        let pending = &mut *pending;
        let mut due = Vec::new();
        pending.by_conversation.retain(|conversation, by_user| {
            for (user, noted) in by_user.extract_if(|_, noted| noted.first_noted <= cutoff) {
                due.push((conversation.clone(), user, noted));
            }
            !by_user.is_empty()
        });
        pending.pairs -= due.len();
        due
    }
}

/// Starts the task that announces and stores what the sink collected.
pub fn start_coalescer(
    receipts: Receipts,
    membership: Arc<MembershipCache>,
    multicast_groups: Arc<store::MulticastGroups>,
    nats: async_nats::Client,
    timing: CoalescerTiming,
    shutdown: CancellationToken,
) -> (DeliveredSink, tokio::task::JoinHandle<()>) {
    let sink = DeliveredSink::default();
    let coalescer = Coalescer { sink: sink.clone(), receipts, membership, multicast_groups, nats, timing, announced: HashMap::new(), to_store: HashMap::new() };
    let task = tokio::spawn(coalescer.run(shutdown));
    (sink, task)
}

type UserKey = (Id, Id);

struct Coalescer {
    sink: DeliveredSink,
    receipts: Receipts,
    membership: Arc<MembershipCache>,
    /// Groups delivered by multicast: their deliveries are stored, not announced (see `announce`).
    multicast_groups: Arc<store::MulticastGroups>,
    nats: async_nats::Client,
    timing: CoalescerTiming,
    /// The highest delivered `seq` this gateway announced per (conversation, user): announcing is
    /// decided here, not by the store, so it need not wait for the slower writes.
    announced: HashMap<UserKey, u64>,
    /// Watermarks waiting to be stored, and when each first waited.
    to_store: HashMap<UserKey, (u64, Instant)>,
}

impl Coalescer {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.timing.announce_interval / SLICES_PER_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    let now = Instant::now();
                    self.announce(now.checked_sub(self.timing.announce_interval).unwrap_or(now)).await;
                    self.store(now.checked_sub(self.timing.store_interval).unwrap_or(now)).await;
                }
                _ = shutdown.cancelled() => break,
            }
        }
        // Whatever was seen before shutdown is still worth keeping.
        let far_future = Instant::now() + Duration::from_secs(3600);
        self.announce(far_future).await;
        self.store(far_future).await;
    }

    /// Announces the pairs first noted at or before `cutoff` and queues their watermarks for storing.
    async fn announce(&mut self, cutoff: Instant) {
        let mut updates = Vec::new();
        for (conversation, user, noted) in self.sink.take_due(cutoff) {
            let key = (conversation.clone(), user.clone());
            let stored = self.to_store.entry(key.clone()).or_insert((0, noted.first_noted));
            stored.0 = stored.0.max(noted.seq);
            if self.announced.len() >= MAX_ANNOUNCED {
                self.announced.clear();
            }
            if self.multicast_groups.since(&conversation).is_some() {
                // In a group this large every author would hear from every member within one interval
                // (1,999 frames per message at 2,000 members), which filled authors' queues until their
                // devices were closed as too slow (BENCHMARKS.md, large group). The watermark is still stored.
                continue;
            }
            let announced = self.announced.entry(key).or_insert(0);
            if noted.seq > *announced {
                *announced = noted.seq;
                updates.push(WatermarkUpdate { conversation, user, device: noted.device, kind: ReceiptKind::Delivered, seq: noted.seq, audience: noted.audience });
            }
        }
        let (membership, nats) = (&*self.membership, &self.nats);
        futures::stream::iter(updates)
            .for_each_concurrent(ANNOUNCE_CONCURRENCY, |update| async move {
                if let Err(error) = announce(membership, nats, &update).await {
                    tracing::warn!(%error, conversation = %update.conversation, "failed to announce a delivery");
                }
            })
            .await;
    }

    /// Stores the watermarks that have waited since `cutoff` or longer.
    async fn store(&mut self, cutoff: Instant) {
        let receipts = &self.receipts;
        let due: Vec<_> = self.to_store.extract_if(|_, (_, waiting_since)| *waiting_since <= cutoff).collect();
        futures::stream::iter(due)
            .for_each_concurrent(STORE_CONCURRENCY, |((conversation, user), (seq, _))| async move {
                if let Err(error) = receipts.advance_user(&conversation, &user, ReceiptKind::Delivered, seq).await {
                    tracing::warn!(%error, %conversation, "failed to store a delivered watermark; a later one will cover it");
                }
            })
            .await;
    }
}
