//! Tests of the roles' permission lists: each role can do its job and nothing of another's.

use super::*;

/// (role, subject, may publish, may subscribe)
fn check(cases: &[(Role, &str, bool, bool)]) {
    for &(role, subject, publish, subscribe) in cases {
        let permissions = permissions(role);
        assert_eq!(permissions.allows_publish(subject), publish, "{role:?} publish {subject}");
        assert_eq!(permissions.allows_subscribe(subject), subscribe, "{role:?} subscribe {subject}");
    }
}

#[test]
fn roles_reach_what_they_use_and_nothing_next_to_it() {
    use Role::*;
    check(&[
        (Gateway, "msg.c1", true, false),
        (Gateway, "msg.15.c1", true, false),
        (Gateway, "$KV.msgindex_15.c1.1", true, false),
        (Gateway, "$KV.receipts_15.c1.alice", true, false),
        (Push, "$JS.API.DIRECT.GET.KV_receipts_2", true, false),
        (Push, "$KV.receipts_2.c1.alice", false, false),
        (Gateway, "$JS.API.DIRECT.GET.MESSAGES_15", true, false),
        (Gateway, "$JS.API.STREAM.DELETE.MESSAGES_3", false, false),
        (Gateway, "deliver.alice", true, true),
        (Gateway, "$JS.API.STREAM.INFO.MESSAGES", true, false),
        (Gateway, "$JS.API.STREAM.DELETE.MESSAGES", false, false),
        (Gateway, "$JS.API.STREAM.PURGE.MESSAGES", false, false),
        (Gateway, "$JS.API.CONSUMER.CREATE.MESSAGES.fanout", false, false),
        (Gateway, "$KV.members.c1.alice", true, false),
        (Gateway, "$KV.push-pending.a.b.c", false, false),
        (Gateway, "svc.search", true, false),
        (Gateway, "_INBOX_gateway.x", false, true),
        (Gateway, "_INBOX.x", false, false),
        (Fanout, "msg.c1", false, false),
        (Fanout, "deliver.alice", true, false),
        (Fanout, "$JS.API.CONSUMER.MSG.NEXT.MESSAGES.fanout", true, false),
        (Fanout, "$JS.ACK.MESSAGES.fanout.1.2.3.4.5", true, false),
        (Fanout, "$JS.API.CONSUMER.MSG.NEXT.MESSAGES_2.fanout", true, false),
        (Fanout, "$KV.msgstate_2.c1.1", true, false),
        (Fanout, "$JS.API.CONSUMER.MSG.NEXT.PUSH.push", false, false),
        (Fanout, "push.bob.phone.c1", true, false),
        (Media, "$JS.API.CONSUMER.MSG.NEXT.MEDIA_JOBS.media", true, false),
        (Media, "$JS.API.STREAM.PURGE.OBJ_media-quarantine", true, false),
        (Media, "$JS.API.DIRECT.GET.MESSAGES", false, false),
        (Push, "push-dead.bob.phone.c1", true, false),
        (Push, "push.bob.phone.c1", false, false),
        (Push, "$JS.API.CONSUMER.CREATE.MESSAGES.fanout", false, false),
        (Indexer, "$JS.API.CONSUMER.CREATE.MESSAGES.indexer-r1-2", true, false),
        (Indexer, "$JS.API.CONSUMER.DELETE.MESSAGES.indexer-r1-2", true, false),
        (Indexer, "$JS.API.CONSUMER.DELETE.MESSAGES.fanout", false, false),
        (Indexer, "$JS.API.CONSUMER.MSG.NEXT.MESSAGES.fanout", false, false),
        (Indexer, "$JS.API.CONSUMER.CREATE.MESSAGES_4.indexer-r1-2", true, false),
        (Indexer, "$JS.API.CONSUMER.MSG.NEXT.SEARCH_FEED.indexer-r1-2", true, false),
        (Indexer, "$JS.API.STREAM.INFO.SEARCH_FEED", true, false),
        (Gateway, "$JS.API.CONSUMER.CREATE.SEARCH_FEED.x", false, false),
        (Provisioner, "$JS.API.STREAM.CREATE.SEARCH_FEED", true, false),
        (Indexer, "$JS.API.CONSUMER.MSG.NEXT.MESSAGES_4.fanout", false, false),
        (Indexer, "msg.c1", false, false),
        (Indexer, "$SRV.PING.natter-search", false, true),
        (Provisioner, "$JS.API.STREAM.CREATE.MESSAGES", true, false),
        (Provisioner, "$JS.API.STREAM.CREATE.MESSAGES_15", true, false),
        (Provisioner, "$JS.API.STREAM.CREATE.KV_msgids_15", true, false),
        (Provisioner, "$JS.API.STREAM.CREATE.MESSAGES_16", false, false),
        (Provisioner, "$JS.API.STREAM.DELETE.MESSAGES", false, false),
        (Provisioner, "msg.c1", false, false),
    ]);
}

#[test]
fn no_role_subscribes_broadly_or_to_another_roles_inbox() {
    for role in Role::ALL {
        let permissions = permissions(role);
        for subject in [">", "_INBOX.x", "$JS.API.STREAM.INFO.MESSAGES", "msg.c1"] {
            assert!(!permissions.allows_subscribe(subject), "{role:?} may subscribe to {subject}");
        }
        for other in Role::ALL.into_iter().filter(|other| *other != role) {
            assert!(!permissions.allows_subscribe(&format!("{}.x", other.inbox_prefix())), "{role:?} reads {other:?}'s replies");
        }
        assert!(!permissions.publish_allow.iter().any(|pattern| pattern == ">" || pattern.starts_with("$JS.API.>")), "{role:?}");
    }
}

#[test]
fn only_the_provisioner_creates_or_updates_streams_and_nobody_deletes_them() {
    for role in Role::ALL {
        let permissions = permissions(role);
        for stream in layout_streams() {
            let may_create = permissions.allows_publish(&format!("$JS.API.STREAM.CREATE.{stream}"));
            assert_eq!(may_create, role == Role::Provisioner, "{role:?} creates {stream}");
            assert!(!permissions.allows_publish(&stream_delete_subject(&stream)), "{role:?} deletes {stream}");
            // Deleting an object purges its chunks; no other stream may be purged.
            let may_purge = permissions.allows_publish(&stream_purge_subject(&stream));
            assert!(!may_purge || stream.starts_with("OBJ_"), "{role:?} purges {stream}");
        }
    }
}

#[test]
fn subjects_match_like_nats_server() {
    for (pattern, subject, expected) in [
        ("a.*", "a.b", true),
        ("a.*", "a.b.c", false),
        ("a.>", "a.b.c", true),
        ("a.>", "a", false),
        ("a.b", "a.b", true),
        ("a.b", "a.bc", false),
    ] {
        assert_eq!(subject_matches(pattern, subject), expected, "{pattern} {subject}");
    }
}
