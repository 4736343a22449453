//! Names and definitions of search: the search service's subjects and queue group, the indexer's consumer, and the analysts' audit stream.

use std::time::Duration;

use async_nats::jetstream::{consumer, stream};

use crate::{Id, Shard, StorageSettings};

/// Search requests (request/reply): every indexer replica answers from its own full index.
pub const SEARCH_SUBJECT: &str = "svc.search";
/// Status requests: the answering replica's indexed sequence, the stream's last one, and the lag between them.
pub const SEARCH_STATUS_SUBJECT: &str = "svc.search.status";
/// The queue group every replica's endpoints join, so one request goes to one replica.
pub const SEARCH_QUEUE_GROUP: &str = "search";
/// Name under which the indexers register as a NATS service (`nats micro ls` shows it).
pub const SEARCH_SERVICE_NAME: &str = "natter-search";
/// Prefix of an indexer replica's consumer names; the rest is random, so replicas never share one.
pub const INDEXER_CONSUMER_PREFIX: &str = "indexer";

/// `indexer-<replica>-<generation>`: one replica's consumer; a new generation each time it is created again.
pub fn indexer_consumer_name(replica: &Id, generation: u64) -> String {
    format!("{INDEXER_CONSUMER_PREFIX}-{replica}-{generation}")
}

/// Every analyst query, who asked what and when: `audit.search.<analyst>`.
pub const SEARCH_AUDIT_STREAM: &str = "SEARCH_AUDIT";
/// Audit records are kept this long (a year), whatever the message TTL is.
pub const SEARCH_AUDIT_MAX_AGE: Duration = Duration::from_secs(366 * 24 * 3600);

const SEARCH_AUDIT_SUBJECT_PREFIX: &str = "audit.search.";

/// `audit.search.<analyst>`: where an analyst's query is recorded before it runs.
pub fn search_audit_subject(analyst: &Id) -> String {
    format!("{SEARCH_AUDIT_SUBJECT_PREFIX}{analyst}")
}

/// The audit stream: a limits stream of immutable records (no deletes, no purges through the API).
pub fn search_audit_stream_config(settings: &StorageSettings) -> stream::Config {
    stream::Config {
        name: SEARCH_AUDIT_STREAM.to_owned(),
        description: Some("analyst queries: audit.search.<analyst>".to_owned()),
        subjects: vec![format!("{SEARCH_AUDIT_SUBJECT_PREFIX}*")],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        max_age: SEARCH_AUDIT_MAX_AGE,
        num_replicas: settings.replicas,
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        ..Default::default()
    }
}

/// The log as one sequence for the indexer when it has several shards: a stream that sources every
/// shard's stream. Search positions, pagination snapshots and expiry are all one stream sequence;
/// the copy is off the send path (the shards' leaders copy it out), and with one shard the indexer
/// reads `MESSAGES` itself and nothing is copied.
pub const SEARCH_FEED_STREAM: &str = "SEARCH_FEED";

/// The stream the indexer follows: `MESSAGES` with one shard, [`SEARCH_FEED_STREAM`] with more.
pub fn search_feed_stream(settings: &StorageSettings) -> String {
    match settings.message_shards {
        0 | 1 => Shard::FIRST.message_stream(),
        _ => SEARCH_FEED_STREAM.to_owned(),
    }
}

/// The search feed's definition: no subjects of its own, every shard's stream as a source; `None` with one shard.
pub fn search_feed_config(settings: &StorageSettings) -> Option<stream::Config> {
    if settings.message_shards <= 1 {
        return None;
    }
    let sources = Shard::all(settings.message_shards).map(|shard| stream::Source { name: shard.message_stream(), ..Default::default() }).collect();
    Some(stream::Config {
        name: SEARCH_FEED_STREAM.to_owned(),
        description: Some("every log shard in one sequence, for the indexer".to_owned()),
        sources: Some(sources),
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        max_age: settings.message_ttl,
        num_replicas: settings.replicas,
        allow_direct: true,
        ..Default::default()
    })
}

/// An indexer replica's view of the log, starting right after what its index has committed.
///
/// The index's commit holds the position, so the consumer keeps none: it is ephemeral (named
/// per replica and start, gone `inactive_threshold` after the replica is), unacknowledged and
/// in memory, and is created again from the committed position whenever it breaks.
pub fn indexer_consumer_config(consumer_name: &str, start_sequence: u64) -> consumer::pull::Config {
    consumer::pull::Config {
        name: Some(consumer_name.to_owned()),
        description: Some("indexer: msg.* -> tantivy".to_owned()),
        deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: start_sequence.max(1) },
        ack_policy: consumer::AckPolicy::None,
        inactive_threshold: Duration::from_secs(60),
        memory_storage: true,
        num_replicas: 1,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_spelled_as_documented() {
        let analyst = Id::parse("ann").unwrap();
        assert_eq!(search_audit_subject(&analyst), "audit.search.ann");
        assert_eq!(indexer_consumer_name(&analyst, 2), "indexer-ann-2");
        assert!(search_audit_stream_config(&StorageSettings::default()).subjects[0].starts_with("audit.search."));
        let config = indexer_consumer_config("indexer-x", 0);
        assert_eq!(config.deliver_policy, consumer::DeliverPolicy::ByStartSequence { start_sequence: 1 });
        let one_shard = StorageSettings::default();
        assert_eq!(search_feed_stream(&one_shard), "MESSAGES");
        assert!(search_feed_config(&one_shard).is_none());
        let three_shards = StorageSettings { message_shards: 3, ..StorageSettings::default() };
        assert_eq!(search_feed_stream(&three_shards), SEARCH_FEED_STREAM);
        let sources: Vec<String> = search_feed_config(&three_shards).unwrap().sources.unwrap().into_iter().map(|source| source.name).collect();
        assert_eq!(sources, ["MESSAGES", "MESSAGES_1", "MESSAGES_2"]);
    }
}
