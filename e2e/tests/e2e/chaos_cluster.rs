//! Chaos with accounting on a 3-node NATS cluster started from `nats-config/` with R3 streams and buckets: a log shard's leader SIGKILLed mid-run (three shards), the message stream's leader partitioned off then healed, and the fanout consumer's leader partitioned off; nothing acked is lost, duplicated or reordered.

use std::time::Duration;

use anyhow::Context;
use testkit::NatsCluster;
use crate::chaos::{finish, ROLE_BINARY};
use testkit::chaos::{Chaos, ChaosPlan};
use subjects::Shard;
use testkit::ProcessSystem;

/// Patience for a phase on a busy 2-core machine: a leader election takes a few seconds.
const PHASE_DEADLINE: Duration = Duration::from_secs(90);
const SENDS_PER_PHASE: usize = 150;

/// A cluster, and Natter on it with every stream and bucket replicated three times, the log in `shards` shards.
async fn start_on_a_cluster(dir: &std::path::Path, shards: u32) -> anyhow::Result<(NatsCluster, ProcessSystem)> {
    let cluster = NatsCluster::start(dir).await?;
    let system = ProcessSystem::builder(ROLE_BINARY)
        .gateways(2)
        .nats_urls(cluster.client_urls())
        .env("NATTER_STREAM_REPLICAS", "3")
        .env("NATTER_MESSAGE_SHARDS", &shards.to_string())
        .start()
        .await?;
    Ok((cluster, system))
}

async fn message_stream_leader(cluster: &NatsCluster) -> anyhow::Result<usize> {
    cluster.stream_leader(subjects::MESSAGE_STREAM).await?.context("the message stream has no agreed leader")
}

/// The shard beyond shard 0 holding the most messages so far, and how many each shard holds.
async fn busiest_added_shard(cluster: &NatsCluster, shards: u32) -> anyhow::Result<(Shard, Vec<u64>)> {
    let jetstream = async_nats::jetstream::new(async_nats::connect(cluster.node_client_url(0)).await?);
    let mut counts = Vec::new();
    for shard in Shard::all(shards) {
        counts.push(jetstream.get_stream(shard.message_stream()).await?.info().await?.state.messages);
    }
    let busiest = (1..shards).max_by_key(|shard| counts[*shard as usize]).context("no shard beyond 0")?;
    Ok((Shard(busiest), counts))
}

#[tokio::test]
async fn chaos_cluster_a_log_shards_leader_killed_mid_run_loses_nothing() -> anyhow::Result<()> {
    const SHARDS: u32 = 3;
    let dir = tempfile::tempdir()?;
    let (mut cluster, mut system) = start_on_a_cluster(dir.path(), SHARDS).await?;
    let chaos = Chaos::start(&system, ChaosPlan::default()).await?;
    chaos.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE).await?;
    let (shard, counts) = busiest_added_shard(&cluster, SHARDS).await?;
    anyhow::ensure!(counts.iter().filter(|count| **count > 0).count() >= 2, "the chat's conversations use several shards: {counts:?}");
    let stream = shard.message_stream();
    let leader = cluster.stream_leader(&stream).await?.with_context(|| format!("{stream} has no agreed leader"))?;
    cluster.kill(leader).await;
    // The other two elect a new leader for every shard it led and the chat goes on.
    chaos.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE).await?;
    cluster.restart(leader).await?;
    cluster.wait_healthy(PHASE_DEADLINE).await?;
    chaos.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE).await?;
    let scenario = format!("{stream}'s leader {} SIGKILLed, then restarted (messages per shard before: {counts:?})", cluster.node_name(leader));
    finish(chaos, &scenario, &mut system).await?;
    Ok(())
}

#[tokio::test]
async fn chaos_cluster_the_message_stream_leader_partitioned_off_then_healed_loses_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut cluster, mut system) = start_on_a_cluster(dir.path(), 1).await?;
    let chaos = Chaos::start(&system, ChaosPlan::default()).await?;
    chaos.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE).await?;
    let leader = message_stream_leader(&cluster).await?;
    // Its routes both ways and its clients' connections drop; the process itself runs on, alone.
    cluster.cut(leader);
    chaos.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE).await?;
    let new_leader = message_stream_leader(&cluster).await?;
    anyhow::ensure!(new_leader != leader, "the majority side elected a new leader");
    cluster.heal(leader);
    cluster.wait_healthy(PHASE_DEADLINE).await?;
    chaos.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE).await?;
    let scenario = format!("message stream leader {} partitioned off, then healed", cluster.node_name(leader));
    finish(chaos, &scenario, &mut system).await?;
    Ok(())
}

#[tokio::test]
async fn chaos_cluster_the_fanout_consumers_leader_partitioned_off_then_healed_loses_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut cluster, mut system) = start_on_a_cluster(dir.path(), 1).await?;
    let chaos = Chaos::start(&system, ChaosPlan::default()).await?;
    chaos.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE).await?;
    let leader = cluster.consumer_leader(subjects::MESSAGE_STREAM, subjects::FANOUT_CONSUMER).await?.context("the fanout consumer has no agreed leader")?;
    // A fanout connected to another node keeps its connection but loses the node holding its pull
    // request: it must notice and pull again, or live delivery stops.
    cluster.cut(leader);
    chaos.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE).await?;
    cluster.heal(leader);
    cluster.wait_healthy(PHASE_DEADLINE).await?;
    chaos.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE).await?;
    let scenario = format!("fanout consumer leader {} partitioned off, then healed", cluster.node_name(leader));
    finish(chaos, &scenario, &mut system).await?;
    Ok(())
}
