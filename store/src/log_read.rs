//! Reads a conversation's log by `seq`: history pages, ranges for sync and gap filling, the tail.
//!
//! A page costs one tail read plus, in parallel, one index read and one direct get per
//! message: nothing here scans the stream, so cost does not grow with the stream's size.
//!
//! Direct gets are answered by any replica. On a cluster, a replica still catching up (a node
//! back from a crash or a partition) answers "not found" for what it has not received yet, so a
//! miss is confirmed with the stream leader before it counts, and the tail is read from the
//! leader: a hit is always current, a miss costs one more round trip. A single replica cannot lag,
//! so an R1 deployment keeps to direct gets (the leader's API is the slower, shared path).

use std::collections::{BTreeSet, HashMap};

use async_nats::jetstream::stream::{DirectGetErrorKind, LastRawMessageErrorKind};
use futures::future::join_all;
use schemas::{Message, MessageUpdate, ServerFrame, StoredMessage};
use subjects::Id;

use crate::error::{from_nats, StoreError};
use crate::kv_get::get_confirmed;
use crate::kv_listing::list_entries;
use crate::message_state::{MessageStates, VersionedState};
use crate::shards::LogShard;
use crate::Storage;

/// Largest page PROTOCOL.md allows.
pub const MAX_PAGE: u64 = 200;
/// How far a read walks back along `prev` pointers when an index entry is missing.
const MAX_FALLBACK_WALK: u64 = 64;
/// Extra reads a history page makes to fill itself when changes (folded, not listed) took its places.
const MAX_FILL_ROUNDS: usize = 8;

/// A history page: messages with their changes folded in, and the changes the server could not fold.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub messages: Vec<Message>,
    pub has_more: bool,
    /// An encrypted conversation's edits and reactions in the page's range, for the client to fold.
    pub updates: Vec<MessageUpdate>,
}

/// One log entry as a reader is shown it: a message as it now stands, or a change with the message it changed.
#[derive(Debug, Clone, PartialEq)]
pub enum LogItem {
    Message(Message),
    Update { update: MessageUpdate, message: Option<Message> },
}

impl LogItem {
    pub fn seq(&self) -> u64 {
        match self {
            LogItem::Message(message) => message.seq,
            LogItem::Update { update, .. } => update.seq,
        }
    }

    /// Who wrote the entry: a delivered receipt for it concerns them.
    pub fn sender(&self) -> &str {
        match self {
            LogItem::Message(message) => &message.sender,
            LogItem::Update { update, .. } => &update.sender,
        }
    }

    pub fn into_frame(self) -> ServerFrame {
        match self {
            LogItem::Message(message) => ServerFrame::Message { message },
            LogItem::Update { update, message } => ServerFrame::MessageUpdated { update, message },
        }
    }
}

/// A stretch of the log as stored, with the folded states of its messages.
#[derive(Default)]
struct Window {
    entries: Vec<StoredMessage>,
    states: HashMap<u64, VersionedState>,
}

impl HistoryRequest {
    fn limit(self) -> u64 {
        match self {
            HistoryRequest::Latest { limit } | HistoryRequest::Before { limit, .. } | HistoryRequest::After { limit, .. } => limit.max(1),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryRequest {
    Latest { limit: u64 },
    Before { seq: u64, limit: u64 },
    After { seq: u64, limit: u64 },
}

#[derive(Clone)]
pub struct LogReader {
    storage: Storage,
    states: MessageStates,
}

impl LogReader {
    pub fn new(storage: Storage) -> LogReader {
        LogReader { states: MessageStates::new(storage.clone()), storage }
    }

    pub fn states(&self) -> &MessageStates {
        &self.states
    }

    /// The conversation's last entry with its stream sequence, or None for an empty log.
    ///
    /// Asked of the stream leader when replicated: a lagging replica's older tail would end a history
    /// page early and hide newer messages from a syncing device, and no later miss would reveal it.
    pub async fn last_entry(&self, conversation: &Id) -> Result<Option<(u64, StoredMessage)>, StoreError> {
        let shard = self.storage.shard_of(conversation).await?;
        self.last_entry_in(&shard, conversation).await
    }

    async fn last_entry_in(&self, shard: &LogShard, conversation: &Id) -> Result<Option<(u64, StoredMessage)>, StoreError> {
        let subject = shard.shard.message_subject(conversation);
        if !shard.is_replicated() {
            return match shard.messages.direct_get_last_for_subject(&subject).await {
                Ok(raw) => Ok(Some((raw.sequence, decode(&raw.payload)?))),
                Err(error) if error.kind() == DirectGetErrorKind::NotFound => Ok(None),
                Err(error) => Err(from_nats("failed to read the conversation's tail", error)),
            };
        }
        match shard.messages.get_last_raw_message_by_subject(&subject).await {
            Ok(raw) => Ok(Some((raw.sequence, decode(&raw.payload)?))),
            Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(error) => Err(from_nats("failed to read the conversation's tail", error)),
        }
    }

    /// The `seq` of the conversation's last message (0 when empty).
    pub async fn last_seq(&self, conversation: &Id) -> Result<u64, StoreError> {
        Ok(self.last_entry(conversation).await?.map_or(0, |(_, last)| last.message.seq))
    }

    /// The entry at `stream_seq`, which must exist (the stream just named it, e.g. in a duplicate's ack).
    pub async fn get_by_stream_seq(&self, conversation: &Id, stream_seq: u64) -> Result<StoredMessage, StoreError> {
        let shard = self.storage.shard_of(conversation).await?;
        self.message_at(&shard, stream_seq).await?.ok_or_else(|| StoreError::Internal(format!("log entry {stream_seq} is gone")))
    }

    /// A history page per PROTOCOL.md, as `reader` sees it: ascending `seq`, changes folded into
    /// their messages, and whether older (or newer, for `After`) messages exist.
    ///
    /// Changes hold `seq`s of their own and are not listed, so a page short of `limit` messages
    /// reads on (a few rounds at most) rather than make clients page through reactions.
    pub async fn page(&self, conversation: &Id, request: HistoryRequest, reader: &Id) -> Result<Page, StoreError> {
        let limit = request.limit();
        let (Window { mut entries, mut states }, mut has_more) = self.raw_page(conversation, request).await?;
        for _ in 0..MAX_FILL_ROUNDS {
            let messages = entries.iter().filter(|entry| entry.change.is_none()).count() as u64;
            let (Some(first), Some(last)) = (entries.first(), entries.last()) else { break };
            if messages >= limit || !has_more {
                break;
            }
            let shortfall = limit - messages;
            if let HistoryRequest::After { .. } = request {
                let (more, more_after) = self.raw_page(conversation, HistoryRequest::After { seq: last.message.seq, limit: shortfall }).await?;
                entries.extend(more.entries);
                states.extend(more.states);
                has_more = more_after;
            } else {
                let (more, more_before) = self.raw_page(conversation, HistoryRequest::Before { seq: first.message.seq, limit: shortfall }).await?;
                entries.splice(0..0, more.entries);
                states.extend(more.states);
                has_more = more_before;
            }
        }
        // Folded changes are in their messages; only what the server could not read is listed.
        let unfolded: BTreeSet<u64> = entries
            .iter()
            .filter(|entry| entry.change.as_ref().is_some_and(|change| !schemas::server_folds(change, &entry.message.body)))
            .map(|entry| entry.message.seq)
            .collect();
        let mut page = Page { messages: Vec::new(), has_more, updates: Vec::new() };
        for item in self.fold_with(conversation, entries, Some(states), reader, false).await? {
            match item {
                LogItem::Message(message) => page.messages.push(message),
                LogItem::Update { update, .. } if unfolded.contains(&update.seq) => page.updates.push(update),
                LogItem::Update { .. } => {}
            }
        }
        Ok(page)
    }

    /// Log entries as `reader` sees them: messages with their state folded in, changes with the message they changed.
    pub async fn fold(&self, conversation: &Id, entries: Vec<StoredMessage>, reader: &Id) -> Result<Vec<LogItem>, StoreError> {
        self.fold_with(conversation, entries, None, reader, true).await
    }

    /// [`LogReader::fold`] with the states of the entries' own seqs already read (`prefetched`), and
    /// the messages changes point at outside `entries` read only when `read_targets` (a history page
    /// lists no changes, so it needs none).
    async fn fold_with(
        &self,
        conversation: &Id,
        entries: Vec<StoredMessage>,
        prefetched: Option<HashMap<u64, VersionedState>>,
        reader: &Id,
        read_targets: bool,
    ) -> Result<Vec<LogItem>, StoreError> {
        let in_range: BTreeSet<u64> = entries.iter().filter(|entry| entry.change.is_none()).map(|entry| entry.message.seq).collect();
        let outside: BTreeSet<u64> = if read_targets {
            entries.iter().filter_map(|entry| entry.change.as_ref()).map(|change| change.target_seq).filter(|target| !in_range.contains(target)).collect()
        } else {
            BTreeSet::new()
        };
        let wanted_states: Vec<u64> = match &prefetched {
            Some(_) => outside.iter().copied().collect(),
            None => in_range.iter().chain(outside.iter()).copied().collect(),
        };
        let targets_read = join_all(outside.iter().map(|&target| self.get_by_seq(conversation, target)));
        let states_read = async {
            match wanted_states.is_empty() {
                true => Ok(HashMap::new()),
                false => self.states.get_many(conversation, wanted_states).await,
            }
        };
        let (targets_read, states_read) = tokio::join!(targets_read, states_read);
        let mut states = prefetched.unwrap_or_default();
        states.extend(states_read?);
        let mut targets: HashMap<u64, Message> = HashMap::new();
        for target in targets_read {
            if let Some(target) = target?.filter(|target| target.change.is_none()) {
                targets.insert(target.message.seq, target.message);
            }
        }
        for entry in entries.iter().filter(|entry| entry.change.is_none()) {
            targets.insert(entry.message.seq, entry.message.clone());
        }
        let folded = |seq: u64| {
            let state = states.get(&seq).map(|(state, revision)| (state, *revision));
            targets.get(&seq).map(|message| schemas::fold_message(message.clone(), state, Some(reader.as_str())))
        };
        Ok(entries
            .into_iter()
            .map(|entry| match &entry.change {
                None => LogItem::Message(folded(entry.message.seq).unwrap_or(entry.message)),
                Some(change) => LogItem::Update { update: MessageUpdate::new(&entry.message, change), message: folded(change.target_seq) },
            })
            .collect())
    }

    /// Entries `first..=last` as `reader` sees them (see [`LogReader::fold`]).
    pub async fn folded_range(&self, conversation: &Id, first: u64, last: u64, reader: &Id) -> Result<Vec<LogItem>, StoreError> {
        let entries = self.range(conversation, first, last).await?;
        self.fold(conversation, entries, reader).await
    }

    /// A `Before` page reads the `seq`s it names and needs the tail only when they run past it.
    async fn raw_page(&self, conversation: &Id, request: HistoryRequest) -> Result<(Window, bool), StoreError> {
        match request {
            HistoryRequest::Latest { limit } => {
                let last = self.last_seq(conversation).await?;
                self.page_ending_at(conversation, last, limit).await
            }
            HistoryRequest::Before { seq, limit } => {
                let end = seq.saturating_sub(1);
                let (window, more) = self.page_ending_at(conversation, end, limit).await?;
                if window.entries.last().is_some_and(|entry| entry.message.seq == end) || end == 0 {
                    return Ok((window, more));
                }
                // `seq` is beyond the tail (or its predecessor expired): clamp to the tail as before.
                let last = self.last_seq(conversation).await?;
                self.page_ending_at(conversation, end.min(last), limit).await
            }
            HistoryRequest::After { seq, limit } => {
                // Near the tail, most of the names would be past it; the tail says where to stop.
                let last = self.last_seq(conversation).await?;
                let end = seq.saturating_add(limit.max(1)).min(last);
                if end <= seq {
                    return Ok((Window::default(), false));
                }
                Ok((self.window(conversation, seq + 1, end).await?, end < last))
            }
        }
    }

    async fn page_ending_at(&self, conversation: &Id, end: u64, limit: u64) -> Result<(Window, bool), StoreError> {
        if end == 0 {
            return Ok((Window::default(), false));
        }
        let first = end.saturating_sub(limit.max(1) - 1).max(1);
        Ok((self.window(conversation, first, end).await?, first > 1))
    }

    /// Entries `first..=last` and their folded states, read side by side: the states' batch get
    /// names every seq of the range (a change's seq simply has none), so it need not wait for the entries.
    async fn window(&self, conversation: &Id, first: u64, last: u64) -> Result<Window, StoreError> {
        let (entries, states) = tokio::try_join!(self.range(conversation, first, last), self.states.get_many(conversation, first..=last))?;
        Ok(Window { entries, states })
    }

    /// A page of the replies to `parent` with `seq` above `after`, ascending, and whether more follow.
    ///
    /// One prefix listing of the thread index (`<conv>.<parent>.*`, one batch direct get) names
    /// every reply's stream sequence, then one direct get per reply on the page: the cost follows
    /// the thread's length, never the conversation's.
    pub async fn thread(&self, conversation: &Id, parent: u64, after: u64, limit: u64, reader: &Id) -> Result<(Vec<Message>, bool), StoreError> {
        let filter = subjects::thread_replies_filter(conversation, parent);
        let shard = self.storage.shard_of(conversation).await?;
        let entries = list_entries(&self.storage.jetstream.client(), &shard.thread_index, &filter).await?;
        let mut replies: Vec<(u64, u64)> = entries
            .iter()
            .filter_map(|(key, value)| {
                let stream_seq = std::str::from_utf8(value).ok()?.parse::<u64>().ok()?;
                Some((subjects::reply_seq_of_thread_key(key)?, stream_seq))
            })
            .filter(|(reply_seq, _)| *reply_seq > after)
            .collect();
        // Keys sort as text ("10" before "9"); a thread is read in `seq` order.
        replies.sort_unstable();
        let limit = usize::try_from(limit.clamp(1, MAX_PAGE)).unwrap_or(1);
        let has_more = replies.len() > limit;
        replies.truncate(limit);
        // The listing names the replies' seqs, so their folded states are read beside the replies.
        let reads = join_all(replies.iter().map(|(_, stream_seq)| self.message_at(&shard, *stream_seq)));
        let (reads, states) = tokio::join!(reads, self.states.get_many(conversation, replies.iter().map(|(reply_seq, _)| *reply_seq)));
        let mut entries = Vec::with_capacity(replies.len());
        for read in reads {
            if let Some(stored) = read? {
                entries.push(stored);
            }
        }
        let messages = self
            .fold_with(conversation, entries, Some(states?), reader, false)
            .await?
            .into_iter()
            .filter_map(|item| match item {
                LogItem::Message(message) => Some(message),
                LogItem::Update { .. } => None,
            })
            .collect();
        Ok((messages, has_more))
    }

    /// Entries `first..=last` as stored, in order, skipping any that retention already removed.
    pub async fn range(&self, conversation: &Id, first: u64, last: u64) -> Result<Vec<StoredMessage>, StoreError> {
        let shard = self.storage.shard_of(conversation).await?;
        let mut messages = Vec::new();
        let mut chunk_start = first.max(1);
        while chunk_start <= last {
            let chunk_end = last.min(chunk_start + MAX_PAGE - 1);
            let reads = (chunk_start..=chunk_end).map(|seq| self.get_by_seq_in(&shard, conversation, seq));
            for read in join_all(reads).await {
                if let Some(stored) = read? {
                    messages.push(stored);
                }
            }
            chunk_start = chunk_end + 1;
        }
        Ok(messages)
    }

    /// One message by `seq`: index lookup, then a direct get; None if it does not exist (or expired).
    pub async fn get_by_seq(&self, conversation: &Id, seq: u64) -> Result<Option<StoredMessage>, StoreError> {
        let shard = self.storage.shard_of(conversation).await?;
        self.get_by_seq_in(&shard, conversation, seq).await
    }

    async fn get_by_seq_in(&self, shard: &LogShard, conversation: &Id, seq: u64) -> Result<Option<StoredMessage>, StoreError> {
        match self.index_entry(shard, conversation, seq).await? {
            Some(stream_seq) => self.message_at(shard, stream_seq).await,
            None => self.walk_back_to(shard, conversation, seq).await,
        }
    }

    /// The stream sequence the index holds for `seq`; a miss is asked again of the bucket's leader.
    async fn index_entry(&self, shard: &LogShard, conversation: &Id, seq: u64) -> Result<Option<u64>, StoreError> {
        let key = subjects::message_index_key(conversation, seq);
        let bytes = get_confirmed(&shard.message_index, &key, "history index").await?;
        Ok(bytes.and_then(|bytes| std::str::from_utf8(&bytes).ok().and_then(|text| text.parse::<u64>().ok())))
    }

    /// The log entry at `stream_seq`, None if retention removed it; a miss is asked again of the leader.
    async fn message_at(&self, shard: &LogShard, stream_seq: u64) -> Result<Option<StoredMessage>, StoreError> {
        match shard.messages.direct_get(stream_seq).await {
            Ok(raw) => return Ok(Some(decode(&raw.payload)?)),
            Err(error) if error.kind() == DirectGetErrorKind::NotFound && !shard.is_replicated() => return Ok(None),
            Err(error) if error.kind() == DirectGetErrorKind::NotFound => {}
            Err(error) => return Err(from_nats("failed to read message", error)),
        }
        match shard.messages.get_raw_message(stream_seq).await {
            Ok(raw) => Ok(Some(decode(&raw.payload)?)),
            Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(error) => Err(from_nats("failed to read message from the stream leader", error)),
        }
    }

    /// The index entry is written just after the PubAck, so the newest messages may not have
    /// one yet: find them by walking back from the tail along `prev` pointers, boundedly.
    async fn walk_back_to(&self, shard: &LogShard, conversation: &Id, seq: u64) -> Result<Option<StoredMessage>, StoreError> {
        let Some((_, mut entry)) = self.last_entry_in(shard, conversation).await? else {
            return Ok(None);
        };
        if entry.message.seq.saturating_sub(seq) > MAX_FALLBACK_WALK {
            // Far from the tail an entry without an index record has expired, not yet to be indexed.
            return Ok(None);
        }
        for _ in 0..=MAX_FALLBACK_WALK {
            if entry.message.seq == seq {
                return Ok(Some(entry));
            }
            if entry.message.seq < seq || entry.prev_stream_seq == 0 {
                return Ok(None);
            }
            entry = match self.message_at(shard, entry.prev_stream_seq).await? {
                Some(previous) => previous,
                None => return Ok(None),
            };
        }
        Ok(None)
    }
}

fn decode(payload: &[u8]) -> Result<StoredMessage, StoreError> {
    schemas::decode_stored_message(payload).map_err(|error| StoreError::Internal(format!("unreadable log entry: {error}")))
}
