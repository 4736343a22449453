//! Per-conversation order at every device with several gateways and fanout workers, and no loss when a fanout worker dies.

use std::collections::HashMap;
use std::time::Duration;

use testkit::{TestSystem, WsClient};

const WAIT: Duration = Duration::from_secs(30);

/// Every device must hold 1..=last exactly once, in order.
fn assert_gapless(device: &str, seqs: &[u64], last: u64) {
    let expected: Vec<u64> = (1..=last).collect();
    assert_eq!(seqs, expected.as_slice(), "{device} saw {seqs:?}");
}

#[tokio::test]
async fn two_gateways_two_fanouts_and_concurrent_senders_keep_order_at_every_device() -> anyhow::Result<()> {
    let system = TestSystem::builder().gateways(2).fanouts(2).start().await?;
    let members = ["ann", "ben", "cat", "dan"];
    let group = system.api(0, "ann").create_group("busy", &members[1..]).await?;

    // Two devices per member, one on each gateway.
    let mut devices: Vec<(String, WsClient)> = Vec::new();
    for member in members {
        for gateway in 0..2 {
            let name = format!("{member}-g{gateway}");
            devices.push((name.clone(), system.connect(gateway, member, &name).await?));
        }
    }

    // Every member sends through both gateways at once over HTTP, so appends race for the tail.
    const PER_SENDER: usize = 25;
    let mut senders = Vec::new();
    for (index, member) in members.iter().enumerate() {
        for gateway in 0..2 {
            let api = system.api(gateway, member);
            let conversation = group.id.clone();
            senders.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for message in 0..PER_SENDER {
                    let client_msg_id = format!("s{index}-g{gateway}-{message}");
                    seqs.push(api.send_text_ok(&conversation, &client_msg_id, "racing").await?.seq);
                }
                anyhow::Ok(seqs)
            }));
        }
    }
    let mut acked = Vec::new();
    for sender in senders {
        acked.extend(sender.await??);
    }
    let total = (members.len() * 2 * PER_SENDER) as u64;
    acked.sort_unstable();
    assert_gapless("the acks", &acked, total);

    for (name, device) in devices.iter_mut() {
        let messages = device.messages_until(&group.id, total, WAIT).await?;
        let seqs: Vec<u64> = messages.iter().map(|message| message.seq).collect();
        assert_gapless(name, &seqs, total);
    }
    Ok(())
}

#[tokio::test]
async fn a_fanout_worker_killed_mid_stream_loses_nothing() -> anyhow::Result<()> {
    let mut system = TestSystem::builder().fanouts(2).start().await?;
    let group = system.api(0, "ann").create_group("survivors", &["ben"]).await?;
    let mut ben = system.connect(0, "ben", "phone").await?;
    let ann = system.api(0, "ann");

    const TOTAL: u64 = 300;
    let conversation = group.id.clone();
    let sender = tokio::spawn(async move {
        for index in 1..=TOTAL {
            ann.send_text_ok(&conversation, &format!("m{index}"), "steady").await?;
        }
        anyhow::Ok(())
    });
    // Kill one worker once traffic is flowing through it.
    let first = ben.messages_until(&group.id, 20, WAIT).await?;
    system.kill_fanout(0);
    sender.await??;

    let rest = ben.messages_until(&group.id, TOTAL, WAIT).await?;
    let seqs: Vec<u64> = first.iter().chain(rest.iter()).map(|message| message.seq).collect();
    assert_gapless("ben", &seqs, TOTAL);

    // And a replacement worker starts from the durable consumer, not from scratch.
    system.add_fanout().await?;
    let mut counts: HashMap<u64, usize> = HashMap::new();
    system.api(0, "ann").send_text_ok(&group.id, "after-restart", "still here").await?;
    for message in ben.messages_until(&group.id, TOTAL + 1, WAIT).await? {
        *counts.entry(message.seq).or_default() += 1;
    }
    assert_eq!(counts.get(&(TOTAL + 1)), Some(&1));
    assert!(counts.keys().all(|seq| *seq == TOTAL + 1), "nothing old was shown again: {counts:?}");
    Ok(())
}
