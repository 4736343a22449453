//! A device that stops reading overflows its bounded queue, is closed with a reason, and catches up with `sync` — without slowing anyone else.

use std::time::Duration;

use schemas::ServerFrame;
use serde_json::json;
use testkit::TestSystem;

#[tokio::test]
async fn a_device_that_stops_reading_is_closed_with_a_reason_and_resumes_with_sync() -> anyhow::Result<()> {
    let system = TestSystem::builder().gateway_config(|config| config.limits.outbound_queue_frames = 16).start().await?;
    // Enough bytes to fill the socket buffers and then the queue behind them.
    const TOTAL: u64 = 400;
    let ann = system.api(0, "ann");
    let group = ann.create_group("firehose", &["sid", "fay"]).await?;
    let mut sleepy = system.connect(0, "sid", "phone").await?;
    let mut fast = system.connect(0, "fay", "phone").await?;
    // The reader that keeps up is unaffected by the one that does not.
    let fast_conversation = group.id.clone();
    let fast_reader = tokio::spawn(async move { fast.messages_until(&fast_conversation, TOTAL, Duration::from_secs(60)).await });

    let text = "z".repeat(60 * 1024);
    for index in 1..=TOTAL {
        ann.send_text_ok(&group.id, &format!("m{index}"), &text).await?;
    }
    let fast_seen: Vec<u64> = fast_reader.await??.iter().map(|message| message.seq).collect();
    assert_eq!(fast_seen, (1..=TOTAL).collect::<Vec<_>>());

    let (frames, close) = sleepy.frames_until_closed(Duration::from_secs(30)).await?;
    let close = close.expect("the server says why it closed");
    assert_eq!(u16::from(close.code), 1013);
    assert!(close.reason.contains("sync"), "the reason tells the client what to do: {}", close.reason);
    let seen: Vec<u64> = frames.iter().filter_map(|frame| match frame {
        ServerFrame::Message { message } => Some(message.seq),
        _ => None,
    }).collect();
    assert!(seen.len() < TOTAL as usize, "the device was cut off before the end");
    assert_eq!(seen, (1..=seen.len() as u64).collect::<Vec<_>>(), "what it got was in order");

    let mut resumed = system.connect_resuming(0, "sid", "phone").await?;
    let (missed, cursors) = resumed.sync(json!({ group.id.clone(): seen.len() })).await?;
    let missed: Vec<u64> = missed.iter().map(|message| message.seq).collect();
    assert_eq!(missed, ((seen.len() as u64 + 1)..=TOTAL).collect::<Vec<_>>());
    assert_eq!(cursors, json!({ group.id.clone(): TOTAL }));
    Ok(())
}
