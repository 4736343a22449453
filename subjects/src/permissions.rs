//! What each Natter role may publish and subscribe to on NATS, built from this crate's own names, for `nats-config/users.conf`.
//!
//! A role gets the subjects it speaks, the exact JetStream API subjects of the streams, buckets,
//! object stores and consumers it uses, and replies on its own inbox prefix only. Creating,
//! updating, deleting or purging a stream belongs to the provisioner; a worker may create only
//! the consumers it owns. Every name comes from the constants and builders beside this file, so a
//! renamed stream changes the permissions with it.

use crate::{Shard, StorageSettings, media, push, search, MAX_MESSAGE_SHARDS};

/// The NATS users Natter's processes run as: one per role, plus the provisioner that owns the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Provisioner,
    Gateway,
    Fanout,
    Media,
    Push,
    Indexer,
}

impl Role {
    pub const ALL: [Role; 6] = [Role::Provisioner, Role::Gateway, Role::Fanout, Role::Media, Role::Push, Role::Indexer];

    /// The NATS user name (and the last word of the role's password variable).
    pub fn user(self) -> &'static str {
        match self {
            Role::Provisioner => "provisioner",
            Role::Gateway => "gateway",
            Role::Fanout => "fanout",
            Role::Media => "media",
            Role::Push => "push",
            Role::Indexer => "indexer",
        }
    }

    pub fn from_user(user: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.user() == user)
    }

    /// The role's reply subjects start with this (async-nats `custom_inbox_prefix`), so no other
    /// role can subscribe to its replies: with one shared `_INBOX.>` any role could read them all.
    pub fn inbox_prefix(self) -> String {
        format!("_INBOX_{}", self.user())
    }

    /// The environment variable nats-server reads the role's password (or bcrypt hash) from.
    pub fn password_variable(self) -> String {
        format!("NATTER_NATS_PASSWORD_{}", self.user().to_uppercase())
    }
}

/// One user's permissions, in nats-server's terms. Deny wins over allow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    pub publish_allow: Vec<String>,
    pub publish_deny: Vec<String>,
    pub subscribe_allow: Vec<String>,
    /// May publish to the reply subject of a request it received (a service answering).
    pub allow_responses: bool,
}

impl Permissions {
    /// Whether nats-server lets this user publish to the concrete `subject` (deny wins).
    pub fn allows_publish(&self, subject: &str) -> bool {
        let matches = |patterns: &[String]| patterns.iter().any(|pattern| subject_matches(pattern, subject));
        matches(&self.publish_allow) && !matches(&self.publish_deny)
    }

    /// Whether this user may subscribe to the concrete `subject` without a queue group.
    pub fn allows_subscribe(&self, subject: &str) -> bool {
        self.subscribe_allow.iter().any(|pattern| !pattern.contains(' ') && subject_matches(pattern, subject))
    }
}

/// NATS subject matching: `*` is one token, `>` the rest (at least one token).
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for pattern_token in pattern.split('.') {
        match (pattern_token, subject_tokens.next()) {
            (">", Some(_)) => return true,
            (_, None) => return false,
            ("*", Some(_)) => {}
            (expected, Some(token)) if expected == token => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

/// A concrete subject a pattern allows (wildcards filled in), for tests that try it; the queue group of a subscribe entry is dropped.
pub fn example_subject(pattern: &str) -> String {
    let subject = pattern.split(' ').next().unwrap_or(pattern);
    subject.split('.').map(|token| if token == "*" || token == ">" { "probe" } else { token }).collect::<Vec<_>>().join(".")
}

const JS_API: &str = "$JS.API";

/// `$JS.API.STREAM.INFO.<stream>`: opening a stream, bucket or object store is reading its info.
pub fn stream_info_subject(stream: &str) -> String {
    format!("{JS_API}.STREAM.INFO.{stream}")
}

/// `$JS.API.DIRECT.GET.<stream>`: direct get with the request in the body (sequence, batch, `multi_last`).
pub fn direct_get_subject(stream: &str) -> String {
    format!("{JS_API}.DIRECT.GET.{stream}")
}

/// `$JS.API.STREAM.DELETE.<stream>`; nobody but an operator may send it.
pub fn stream_delete_subject(stream: &str) -> String {
    format!("{JS_API}.STREAM.DELETE.{stream}")
}

/// `$JS.API.STREAM.PURGE.<stream>`.
pub fn stream_purge_subject(stream: &str) -> String {
    format!("{JS_API}.STREAM.PURGE.{stream}")
}

/// `$JS.API.CONSUMER.CREATE.<stream>.<consumer>`, the named form async-nats sends.
pub fn consumer_create_subject(stream: &str, consumer: &str) -> String {
    format!("{JS_API}.CONSUMER.CREATE.{stream}.{consumer}")
}

/// `$JS.API.CONSUMER.DELETE.<stream>.<consumer>`.
pub fn consumer_delete_subject(stream: &str, consumer: &str) -> String {
    format!("{JS_API}.CONSUMER.DELETE.{stream}.{consumer}")
}

/// `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`: a pull.
pub fn consumer_next_subject(stream: &str, consumer: &str) -> String {
    format!("{JS_API}.CONSUMER.MSG.NEXT.{stream}.{consumer}")
}

/// The stream behind an object store.
pub fn object_store_stream_name(bucket: &str) -> String {
    format!("OBJ_{bucket}")
}

/// Every subject of an object store's chunks and metadata.
pub fn object_store_subjects(bucket: &str) -> String {
    format!("$O.{bucket}.>")
}

/// Collects one role's permissions; each method grants one kind of use of one resource.
#[derive(Default)]
struct Grants {
    permissions: Permissions,
}

impl Grants {
    fn publish(&mut self, subject: impl Into<String>) -> &mut Self {
        self.permissions.publish_allow.push(subject.into());
        self
    }

    fn deny_publish(&mut self, subject: impl Into<String>) -> &mut Self {
        self.permissions.publish_deny.push(subject.into());
        self
    }

    fn subscribe(&mut self, subject: impl Into<String>) -> &mut Self {
        self.permissions.subscribe_allow.push(subject.into());
        self
    }

    /// Open a stream (info) without reading its messages.
    fn open_stream(&mut self, stream: &str) -> &mut Self {
        self.publish(stream_info_subject(stream))
    }

    /// Read single messages and batches: direct get in both forms, and the non-direct get.
    fn read_stream(&mut self, stream: &str) -> &mut Self {
        self.open_stream(stream)
            .publish(direct_get_subject(stream))
            .publish(format!("{}.>", direct_get_subject(stream)))
            .publish(format!("{JS_API}.STREAM.MSG.GET.{stream}"))
    }

    /// Follow a stream with an ordered consumer (KV watches, object reads): async-nats creates it
    /// unnamed, and the server asks for flow-control replies on `$JS.FC.<stream>.>`.
    fn follow_stream(&mut self, stream: &str) -> &mut Self {
        self.publish(format!("{JS_API}.CONSUMER.CREATE.{stream}")).publish(format!("$JS.FC.{stream}.>"))
    }

    fn open_bucket(&mut self, bucket: &str) -> &mut Self {
        self.open_stream(&crate::kv_stream_name(bucket))
    }

    fn read_bucket(&mut self, bucket: &str) -> &mut Self {
        self.read_stream(&crate::kv_stream_name(bucket))
    }

    fn watch_bucket(&mut self, bucket: &str) -> &mut Self {
        self.read_bucket(bucket).follow_stream(&crate::kv_stream_name(bucket))
    }

    /// Put, create, update, delete and purge keys: all of them are publishes to `$KV.<bucket>.<key>`.
    fn write_bucket(&mut self, bucket: &str) -> &mut Self {
        self.read_bucket(bucket).publish(crate::kv_key_subject(bucket, ">"))
    }

    fn read_objects(&mut self, bucket: &str) -> &mut Self {
        let stream = object_store_stream_name(bucket);
        self.read_stream(&stream).follow_stream(&stream)
    }

    /// Put and delete objects; deleting (or replacing) an object purges its chunks from the store's stream.
    fn write_objects(&mut self, bucket: &str) -> &mut Self {
        self.read_objects(bucket).publish(object_store_subjects(bucket)).publish(stream_purge_subject(&object_store_stream_name(bucket)))
    }

    /// Pull from a durable consumer the role owns: create (or find) it, read its info, pull, ack.
    fn consume(&mut self, stream: &str, consumer: &str) -> &mut Self {
        self.open_stream(stream)
            .publish(consumer_create_subject(stream, consumer))
            .publish(format!("{}.>", consumer_create_subject(stream, consumer)))
            .publish(format!("{JS_API}.CONSUMER.INFO.{stream}.{consumer}"))
            .publish(consumer_next_subject(stream, consumer))
            .publish(format!("$JS.ACK.{stream}.{consumer}.>"))
    }

    /// Append to a stream: a publish on its subjects, acked on the role's inbox.
    fn append(&mut self, subjects: &[String]) -> &mut Self {
        for subject in subjects {
            self.publish(subject.clone());
        }
        self
    }

    /// Answer requests as the NATS service `service`, its endpoints in `queue_group`.
    fn serve(&mut self, service: &str, endpoints: &[&str], queue_group: &str) -> &mut Self {
        for endpoint in endpoints {
            self.subscribe(format!("{endpoint} {queue_group}"));
        }
        // async-nats' service discovery: `$SRV.<verb>`, `.<name>` and `.<name>.<id>` for PING, INFO, STATS.
        self.subscribe("$SRV.*").subscribe(format!("$SRV.*.{service}")).subscribe(format!("$SRV.*.{service}.*"));
        self.permissions.allow_responses = true;
        self
    }

    fn finish(mut self, role: Role) -> Permissions {
        self.subscribe(format!("{}.>", role.inbox_prefix()));
        let mut permissions = self.permissions;
        for list in [&mut permissions.publish_allow, &mut permissions.publish_deny, &mut permissions.subscribe_allow] {
            list.sort();
            list.dedup();
        }
        permissions
    }
}

/// The subjects a stream definition captures, from the definition itself.
fn stream_subjects(config: async_nats::jetstream::stream::Config) -> Vec<String> {
    config.subjects
}

/// The permissions `role` runs with.
pub fn permissions(role: Role) -> Permissions {
    let settings = StorageSettings::default();
    let shards = || Shard::all(MAX_MESSAGE_SHARDS);
    let mut grants = Grants::default();
    match role {
        Role::Provisioner => {
            // Creating a KV bucket first reads the account's limits.
            grants.publish(format!("{JS_API}.INFO"));
            for stream in layout_streams() {
                grants
                    .open_stream(&stream)
                    .publish(format!("{JS_API}.STREAM.CREATE.{stream}"))
                    .publish(format!("{JS_API}.STREAM.UPDATE.{stream}"))
                    // Checking what it made: the workers' consumers, once they exist.
                    .publish(format!("{JS_API}.CONSUMER.INFO.{stream}.*"));
            }
        }
        Role::Gateway => {
            for shard in shards() {
                grants.read_stream(&shard.message_stream()).append(&[shard.message_subjects_filter()]);
                for bucket in [shard.message_index_bucket(), shard.thread_index_bucket(), shard.message_state_bucket(), shard.client_msg_id_bucket(), shard.receipts_bucket()] {
                    grants.write_bucket(&bucket);
                }
            }
            for bucket in [
                crate::CONVERSATIONS_BUCKET,
                crate::MEMBERSHIPS_BUCKET,
                crate::MENTIONS_BUCKET,
                media::MEDIA_RECORDS_BUCKET,
                push::PUSH_DEVICES_BUCKET,
                push::NOTIFICATION_SETTINGS_BUCKET,
            ] {
                grants.write_bucket(bucket);
            }
            grants.write_bucket(crate::MEMBERS_BUCKET).watch_bucket(crate::MEMBERS_BUCKET).open_bucket(push::PUSH_PENDING_BUCKET);
            // A group that grows large is flagged here; every gateway follows the flags and takes its deliveries once per gateway.
            grants.write_bucket(crate::MULTICAST_BUCKET).watch_bucket(crate::MULTICAST_BUCKET).subscribe(crate::every_multicast_subject());
            grants
                .write_objects(media::MEDIA_QUARANTINE_OBJECTS)
                .read_objects(media::MEDIA_OBJECTS)
                .append(&stream_subjects(media::media_jobs_stream_config(&settings)))
                .append(&stream_subjects(search::search_audit_stream_config(&settings)))
                .publish(search::SEARCH_SUBJECT)
                .publish(search::SEARCH_STATUS_SUBJECT)
                // Presence, typing and receipts go straight to the recipients' gateways.
                .publish(crate::every_deliver_subject())
                .subscribe(crate::every_deliver_subject());
        }
        Role::Fanout => {
            for shard in shards() {
                // A change's frame carries the changed message as it now stands: read like history, and
                // the change folded in when the gateway that appended it died before doing so.
                grants
                    .consume(&shard.message_stream(), crate::FANOUT_CONSUMER)
                    .read_stream(&shard.message_stream())
                    .read_bucket(&shard.message_index_bucket())
                    .write_bucket(&shard.message_state_bucket());
            }
            grants
                .publish(crate::every_deliver_subject())
                .publish(crate::every_multicast_subject())
                .watch_bucket(crate::MULTICAST_BUCKET);
            open_core_buckets(&mut grants);
            grants
                // Which shard a conversation's log is in is written in its record.
                .read_bucket(crate::CONVERSATIONS_BUCKET)
                .watch_bucket(crate::MEMBERS_BUCKET)
                .watch_bucket(push::PUSH_DEVICES_BUCKET)
                .read_bucket(push::NOTIFICATION_SETTINGS_BUCKET)
                .write_bucket(push::PUSH_PENDING_BUCKET)
                .append(&stream_subjects(push::push_stream_config(&settings)));
        }
        Role::Media => {
            grants
                .consume(media::MEDIA_JOBS_STREAM, media::MEDIA_CONSUMER)
                .write_bucket(media::MEDIA_RECORDS_BUCKET)
                .write_objects(media::MEDIA_QUARANTINE_OBJECTS)
                .write_objects(media::MEDIA_OBJECTS)
                // The uploader's devices hear `ready` or `rejected` directly.
                .publish(crate::every_deliver_subject());
        }
        Role::Push => {
            open_core_buckets(&mut grants);
            // The notification's preview is the message itself, read like history: index, then the log.
            for shard in shards() {
                grants
                    .read_stream(&shard.message_stream())
                    .read_bucket(&shard.message_index_bucket())
                    .read_bucket(&shard.message_state_bucket())
                    .read_bucket(&shard.receipts_bucket());
            }
            grants
                // A notification says when the unread messages mention the user.
                .read_bucket(crate::MENTIONS_BUCKET)
                .read_bucket(crate::CONVERSATIONS_BUCKET)
                .consume(push::PUSH_STREAM, push::PUSH_CONSUMER)
                .append(&stream_subjects(push::push_dead_letter_stream_config(&settings)))
                .write_bucket(push::PUSH_DEVICES_BUCKET)
                .read_bucket(push::NOTIFICATION_SETTINGS_BUCKET)
                .write_bucket(push::PUSH_PENDING_BUCKET);
        }
        Role::Indexer => {
            open_core_buckets(&mut grants);
            // Each replica makes its own consumers (`indexer-<replica>-<generation>`); subject
            // wildcards match whole tokens only, so the names are allowed by `*` and every other
            // role's durable on the log is denied by name.
            grants.read_bucket(crate::CONVERSATIONS_BUCKET);
            let feeds = shards().map(Shard::message_stream).chain([search::SEARCH_FEED_STREAM.to_owned()]);
            for log in feeds {
                let log = &log;
                grants
                    .read_stream(log)
                    .publish(format!("{JS_API}.CONSUMER.CREATE.{log}.*"))
                    .publish(format!("{JS_API}.CONSUMER.DELETE.{log}.*"))
                    .publish(format!("{JS_API}.CONSUMER.INFO.{log}.*"))
                    .publish(format!("{JS_API}.CONSUMER.MSG.NEXT.{log}.*"));
                for durable in durable_consumers_of(log) {
                    grants
                        .deny_publish(consumer_create_subject(log, durable))
                        .deny_publish(format!("{}.>", consumer_create_subject(log, durable)))
                        .deny_publish(consumer_delete_subject(log, durable))
                        .deny_publish(consumer_next_subject(log, durable));
                }
            }
            grants.serve(search::SEARCH_SERVICE_NAME, &[search::SEARCH_SUBJECT, search::SEARCH_STATUS_SUBJECT], search::SEARCH_QUEUE_GROUP);
        }
    }
    grants.finish(role)
}

/// Every runtime role opens the log's shards and the core buckets at start (`store::Storage`).
fn open_core_buckets(grants: &mut Grants) {
    let settings = StorageSettings::default();
    for shard in Shard::all(MAX_MESSAGE_SHARDS) {
        grants.open_stream(&shard.message_stream());
        for config in shard.bucket_configs(&settings) {
            grants.open_bucket(&config.bucket);
        }
    }
    for config in crate::bucket_configs(&settings) {
        grants.open_bucket(&config.bucket);
    }
}

/// The durable consumers other roles own on `stream`.
fn durable_consumers_of(stream: &str) -> Vec<&'static str> {
    let shard_consumers = Shard::all(MAX_MESSAGE_SHARDS).map(|shard| (shard.message_stream(), crate::FANOUT_CONSUMER));
    let other_consumers = [(media::MEDIA_JOBS_STREAM, media::MEDIA_CONSUMER), (push::PUSH_STREAM, push::PUSH_CONSUMER)].map(|(stream, consumer)| (stream.to_owned(), consumer));
    shard_consumers
        .chain(other_consumers)
        .filter(|(owner_stream, _)| owner_stream == stream)
        .map(|(_, consumer)| consumer)
        .collect()
}

/// Every stream the provisioner creates: the streams, the KV buckets' and the object stores'.
pub fn layout_streams() -> Vec<String> {
    let settings = StorageSettings::default();
    let mut streams: Vec<String> = Shard::all(MAX_MESSAGE_SHARDS).flat_map(Shard::stream_names).collect();
    streams.extend([
        media::MEDIA_JOBS_STREAM.to_owned(),
        push::PUSH_STREAM.to_owned(),
        push::PUSH_DEAD_LETTER_STREAM.to_owned(),
        search::SEARCH_AUDIT_STREAM.to_owned(),
        search::SEARCH_FEED_STREAM.to_owned(),
    ]);
    let buckets = crate::bucket_configs(&settings).into_iter().chain(push::push_bucket_configs(&settings)).map(|config| config.bucket);
    streams.extend(buckets.chain([media::MEDIA_RECORDS_BUCKET.to_owned()]).map(|bucket| crate::kv_stream_name(&bucket)));
    streams.extend([media::MEDIA_QUARANTINE_OBJECTS, media::MEDIA_OBJECTS].map(object_store_stream_name));
    streams
}

#[cfg(test)]
#[path = "permissions_tests.rs"]
mod tests;
