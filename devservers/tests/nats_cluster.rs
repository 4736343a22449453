//! The 3-node test cluster: an R3 stream survives its leader's SIGKILL, and a cut node is really isolated and catches up once healed.

use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream;
use devservers::{CLUSTER_SIZE, NatsCluster};
use tokio::time::Instant;

const STREAM: &str = "FAULTS";
const HEALTHY_DEADLINE: Duration = Duration::from_secs(30);

/// A client that may use any node, as Natter's roles do; it reconnects to another when one goes away.
async fn connect_any(cluster: &NatsCluster) -> anyhow::Result<async_nats::Client> {
    let urls: Vec<async_nats::ServerAddr> = cluster
        .client_urls()
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    connect(urls).await
}

async fn connect(urls: Vec<async_nats::ServerAddr>) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(2))
        .connect(urls)
        .await
        .context("failed to connect to the cluster")
}

async fn create_r3_stream(jetstream: &jetstream::Context) -> anyhow::Result<()> {
    jetstream
        .create_stream(jetstream::stream::Config {
            name: STREAM.to_owned(),
            subjects: vec!["faults.>".to_owned()],
            num_replicas: 3,
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// Publishes until JetStream acks, within `deadline`; a publish during a leader election may fail or time out.
async fn publish_acked(
    jetstream: &jetstream::Context,
    index: u64,
    deadline: Duration,
) -> anyhow::Result<()> {
    let give_up_at = Instant::now() + deadline;
    let message_id = format!("m{index}");
    loop {
        let mut headers = async_nats::HeaderMap::new();
        // The same id on every retry: a publish that was stored but whose ack was lost is not stored twice.
        headers.insert("Nats-Msg-Id", message_id.as_str());
        let attempt = async {
            jetstream
                .publish_with_headers("faults.a", headers, format!("{index}").into())
                .await?
                .await
        };
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(_ack)) => return Ok(()),
            Ok(Err(error)) if Instant::now() >= give_up_at => return Err(error.into()),
            Err(_elapsed) if Instant::now() >= give_up_at => {
                anyhow::bail!("publish {index} never acked")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The stream's leader once every reachable node names the same one: right after the stream is
/// made, or after an election, a follower's monitoring may not name it yet (a loaded run saw that).
async fn agreed_stream_leader(cluster: &NatsCluster) -> anyhow::Result<usize> {
    wait_for("every node names the same stream leader", HEALTHY_DEADLINE, || async {
        Ok(cluster.stream_leader(STREAM).await?.is_some())
    })
    .await?;
    cluster.stream_leader(STREAM).await?.context("the stream leader changed again")
}

async fn wait_for<F, Fut>(what: &str, deadline: Duration, mut condition: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let give_up_at = Instant::now() + deadline;
    loop {
        let last = condition().await;
        if matches!(last, Ok(true)) {
            return Ok(());
        }
        if Instant::now() >= give_up_at {
            anyhow::bail!(
                "timed out after {deadline:?} waiting until {what} (last check: {last:?})"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_r3_stream_survives_its_leaders_sigkill_and_the_node_catches_up() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cluster = NatsCluster::start(dir.path()).await?;
    for node in 0..CLUSTER_SIZE {
        assert_ne!(
            cluster.node(node).port(),
            4222,
            "tests must never use the default port"
        );
    }
    let jetstream = jetstream::new(connect_any(&cluster).await?);
    create_r3_stream(&jetstream).await?;
    for index in 1..=10 {
        publish_acked(&jetstream, index, Duration::from_secs(10)).await?;
    }
    let leader = agreed_stream_leader(&cluster).await?;

    cluster.kill(leader).await;
    for index in 11..=20 {
        publish_acked(&jetstream, index, Duration::from_secs(20)).await?;
    }
    let new_leader = agreed_stream_leader(&cluster).await?;
    assert_ne!(new_leader, leader);

    cluster.restart(leader).await?;
    cluster.wait_healthy(HEALTHY_DEADLINE).await?;
    wait_for(
        "the restarted node holds all 20 messages",
        HEALTHY_DEADLINE,
        || async { Ok(cluster.stream_messages_on(leader, STREAM).await? == Some(20)) },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_cut_node_is_isolated_and_catches_up_after_the_heal() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cluster = NatsCluster::start(dir.path()).await?;
    let jetstream = jetstream::new(connect_any(&cluster).await?);
    create_r3_stream(&jetstream).await?;
    publish_acked(&jetstream, 1, Duration::from_secs(10)).await?;
    // Cutting the stream leader off is the hard case: the majority must elect another.
    let cut = agreed_stream_leader(&cluster).await?;
    let healthy: Vec<usize> = (0..CLUSTER_SIZE).filter(|&node| node != cut).collect();

    cluster.cut(cut);
    wait_for("the cut node has no routes", HEALTHY_DEADLINE, || async {
        Ok(cluster.routed_nodes(cut).await?.is_empty())
    })
    .await?;
    for &node in &healthy {
        let other = healthy
            .iter()
            .copied()
            .find(|&other| other != node)
            .expect("two healthy nodes");
        assert_eq!(
            cluster.routed_nodes(node).await?,
            vec![other],
            "{} routes",
            cluster.node_name(node)
        );
    }
    // Only the cut node's own URL: the proxy accepts and closes, so the client cannot get through.
    let cut_only = connect(vec![cluster.node_client_url(cut).parse()?]).await;
    assert!(cut_only.is_err(), "a client reached the cut node");

    // A client on a healthy node publishes with the quorum of two.
    let on_healthy =
        jetstream::new(connect(vec![cluster.node_client_url(healthy[0]).parse()?]).await?);
    for index in 2..=11 {
        publish_acked(&on_healthy, index, Duration::from_secs(20)).await?;
    }
    assert_eq!(
        cluster.stream_messages_on(cut, STREAM).await?,
        Some(1),
        "the cut node saw nothing new"
    );
    // The client that was on any node moved to a healthy one and goes on, too.
    publish_acked(&jetstream, 12, Duration::from_secs(20)).await?;

    cluster.heal(cut);
    cluster.wait_healthy(HEALTHY_DEADLINE).await?;
    for node in 0..CLUSTER_SIZE {
        assert_eq!(
            cluster.routed_nodes(node).await?.len(),
            CLUSTER_SIZE - 1,
            "{} routes after the heal",
            cluster.node_name(node)
        );
    }
    wait_for(
        "the healed node holds all 12 messages",
        HEALTHY_DEADLINE,
        || async { Ok(cluster.stream_messages_on(cut, STREAM).await? == Some(12)) },
    )
    .await?;
    Ok(())
}
