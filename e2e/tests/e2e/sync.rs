//! Offline catch-up: `sync` yields exactly the missed messages in order, then `synced`, then live traffic, with no gap or duplicate at the seam.

use std::time::Duration;

use schemas::ServerFrame;
use serde_json::json;
use testkit::TestSystem;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn sync_returns_exactly_what_was_missed_across_conversations() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let ann = system.api(0, "ann");
    let first = ann.create_group("first", &["ben"]).await?;
    let second = ann.create_direct("ben").await?;
    for index in 1..=5 {
        ann.send_text_ok(&first.id, &format!("a{index}"), "first").await?;
    }
    for index in 1..=3 {
        ann.send_text_ok(&second.id, &format!("b{index}"), "second").await?;
    }

    let mut ben = system.connect_resuming(0, "ben", "tablet").await?;
    let (messages, cursors) = ben.sync(json!({ first.id.clone(): 2, second.id.clone(): 0 })).await?;
    // Order is per conversation; conversations may come in any order.
    let seqs_of = |conversation: &str| messages.iter().filter(|message| message.conversation_id == conversation).map(|message| message.seq).collect::<Vec<_>>();
    assert_eq!(seqs_of(&first.id), vec![3, 4, 5]);
    assert_eq!(seqs_of(&second.id), vec![1, 2, 3]);
    assert_eq!(messages.len(), 6);
    assert_eq!(cursors, json!({ first.id.clone(): 5, second.id.clone(): 3 }));

    // Live traffic follows the seam.
    ann.send_text_ok(&first.id, "a6", "live").await?;
    let live = ben.messages_until(&first.id, 6, WAIT).await?;
    assert_eq!(live.iter().map(|message| message.seq).collect::<Vec<_>>(), vec![6]);
    Ok(())
}

#[tokio::test]
async fn the_resume_seam_has_no_gap_and_no_duplicate_while_others_keep_sending() -> anyhow::Result<()> {
    let system = TestSystem::builder().fanouts(2).start().await?;
    let ann = system.api(0, "ann");
    let group = ann.create_group("seam", &["ben"]).await?;
    const TOTAL: u64 = 400;
    let conversation = group.id.clone();
    let sender = tokio::spawn(async move {
        for index in 1..=TOTAL {
            ann.send_text_ok(&conversation, &format!("m{index}"), "under load").await?;
        }
        anyhow::Ok(())
    });

    // Ben had seen some of it on an earlier connection; he resumes mid-stream, several times.
    let mut held = 0u64;
    let mut shown = Vec::new();
    for round in 0..4 {
        let mut ben = system.connect_resuming(0, "ben", "phone").await?;
        let id = format!("sync-{round}");
        ben.send_json(json!({"type": "sync", "id": id, "cursors": { group.id.clone(): held }})).await?;
        // Read whatever comes for a while: missed, then synced, then live.
        let target = (held + 60).min(TOTAL);
        let mut synced = false;
        while held < target {
            match ben.next_frame(WAIT).await? {
                ServerFrame::Message { message } => {
                    assert_eq!(message.seq, held + 1, "round {round}: after {held} came {} (synced: {synced})", message.seq);
                    held = message.seq;
                    shown.push(message.seq);
                }
                ServerFrame::Synced { .. } => synced = true,
                // Receipts and presence are events beside the log; they carry no seq.
                ServerFrame::Receipt { .. } | ServerFrame::Presence { .. } => {}
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }
    sender.await??;
    let mut ben = system.connect_resuming(0, "ben", "phone").await?;
    let (rest, _) = ben.sync(json!({ group.id.clone(): held })).await?;
    shown.extend(rest.iter().map(|message| message.seq));
    assert_eq!(shown, (1..=TOTAL).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test]
async fn a_non_members_sync_is_forbidden_and_live_traffic_still_flows() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let secret = system.api(0, "ann").create_group("private", &["ben"]).await?;
    let own = system.api(0, "eve").create_group("eve's", &[]).await?;
    let mut eve = system.connect_resuming(0, "eve", "laptop").await?;
    eve.send_json(json!({"type": "sync", "id": "s1", "cursors": { secret.id.clone(): 0 }})).await?;
    match eve.reply_to("s1", WAIT).await? {
        ServerFrame::Error { code, .. } => assert_eq!(code, schemas::ErrorCode::Forbidden),
        other => panic!("expected forbidden, got {other:?}"),
    }
    eve.send_json(json!({"type": "sync", "id": "s2", "cursors": { "a.b": 0 }})).await?;
    match eve.reply_to("s2", WAIT).await? {
        ServerFrame::Error { code, .. } => assert_eq!(code, schemas::ErrorCode::Invalid),
        other => panic!("expected invalid, got {other:?}"),
    }
    // A refused sync releases the held live frames instead of wedging the device.
    system.api(0, "eve").send_text_ok(&own.id, "m1", "note to self").await?;
    assert_eq!(eve.messages_until(&own.id, 1, WAIT).await?.len(), 1);
    Ok(())
}
