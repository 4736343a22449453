//! Chaos with accounting on a single NATS node: gateways, fanouts and the indexer SIGKILLed mid-run, nats-server killed and restarted from its store, and a rolling restart of every gateway; every acked message must reach every member device once, in order.

use std::time::Duration;

use serde_json::Value;
use testkit::chaos::{Chaos, ChaosPlan, ChaosReport, search_token};
use testkit::{ProcessSystem, wait_until};

const ROLE_BINARY: &str = env!("CARGO_BIN_EXE_role_process");
/// Patience for a phase of the run on a busy 2-core machine; a healthy phase takes a second or two.
const PHASE_DEADLINE: Duration = Duration::from_secs(60);
/// Acked sends between faults, so that each fault lands in the middle of traffic.
const SENDS_PER_PHASE: usize = 150;

async fn finish(
    chaos: Chaos,
    scenario: &str,
    system: &mut ProcessSystem,
) -> anyhow::Result<ChaosReport> {
    let report = chaos.finish(scenario, system).await?;
    println!("{report}");
    report.ensure_nothing_lost()?;
    system.ensure_all_running()?;
    Ok(report)
}

#[tokio::test]
async fn chaos_a_gateway_killed_mid_run_loses_nothing_and_its_clients_resume_on_another()
-> anyhow::Result<()> {
    let mut system = ProcessSystem::builder(ROLE_BINARY)
        .gateways(3)
        .start()
        .await?;
    let chaos = Chaos::start(&system, ChaosPlan::default()).await?;
    chaos.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE).await?;
    system.gateways[1].kill().await;
    // Its clients carry on through the other two.
    chaos.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE).await?;
    system.gateways[1].restart()?;
    system.wait_gateway_ready(1).await?;
    chaos.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE).await?;
    let report = finish(
        chaos,
        "gateway 1 of 3 SIGKILLed, then restarted",
        &mut system,
    )
    .await?;
    assert!(
        report.reconnects > 0,
        "the killed gateway's devices reconnected elsewhere: {report}"
    );
    Ok(())
}

#[tokio::test]
async fn chaos_a_rolling_restart_of_every_gateway_tells_clients_to_reconnect_and_loses_nothing()
-> anyhow::Result<()> {
    let mut system = ProcessSystem::builder(ROLE_BINARY)
        .gateways(3)
        .start()
        .await?;
    let chaos = Chaos::start(&system, ChaosPlan::default()).await?;
    for gateway in 0..system.gateways.len() {
        chaos.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE).await?;
        system.gateways[gateway].terminate().await?;
        chaos
            .wait_for_acks(SENDS_PER_PHASE / 2, PHASE_DEADLINE)
            .await?;
        system.gateways[gateway].restart()?;
        system.wait_gateway_ready(gateway).await?;
    }
    chaos.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE).await?;
    let report = finish(
        chaos,
        "rolling restart (SIGTERM) of gateways 0, 1, 2",
        &mut system,
    )
    .await?;
    let going_away = report.server_closes.get(&1001).copied().unwrap_or(0);
    assert!(
        going_away > 0,
        "a stopping gateway closes its sockets with 1001 and a reason: {report}"
    );
    Ok(())
}

#[tokio::test]
async fn chaos_a_fanout_and_an_indexer_killed_mid_run_lose_nothing_and_search_finds_every_acked_message()
-> anyhow::Result<()> {
    let mut system = ProcessSystem::builder(ROLE_BINARY)
        .gateways(2)
        .fanouts(2)
        .with_indexer()
        .start()
        .await?;
    let chaos = Chaos::start(&system, ChaosPlan::default()).await?;
    chaos.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE).await?;
    system.fanouts[0].kill().await;
    chaos.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE).await?;
    // Both fanouts down: deliveries wait in the stream, sends go on.
    system.fanouts[1].kill().await;
    let indexer = system.indexer.as_mut().expect("started with an indexer");
    indexer.kill().await;
    chaos.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE).await?;
    system.fanouts[0].restart()?;
    system.fanouts[1].restart()?;
    system
        .indexer
        .as_mut()
        .expect("started with an indexer")
        .restart()?;
    chaos.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE).await?;
    let report = finish(
        chaos,
        "fanouts and indexer SIGKILLed, then restarted",
        &mut system,
    )
    .await?;

    // The restarted indexer resumes from its last commit: every acked message is searchable exactly once.
    for (conversation, client_msg_id) in &report.acked_messages {
        let sender = client_msg_id
            .split('-')
            .next()
            .expect("client_msg_ids start with the sender");
        let api = system.api(0, sender);
        let query = format!(
            "/v1/search?q={}&conversation_id={conversation}",
            search_token(client_msg_id)
        );
        wait_until(
            &format!("search finds {client_msg_id}"),
            PHASE_DEADLINE,
            || {
                let api = api.clone();
                let query = query.clone();
                async move {
                    let Ok((status, body)) = api.get(&query).await else {
                        return false;
                    };
                    let hits = body["hits"].as_array().cloned().unwrap_or_default();
                    status.is_success()
                        && hits.len() == 1
                        && hits[0]["message"]["client_msg_id"]
                            == Value::String(client_msg_id.clone())
                }
            },
        )
        .await?;
    }
    Ok(())
}

#[tokio::test]
async fn chaos_nats_server_killed_and_restarted_from_its_store_loses_nothing() -> anyhow::Result<()>
{
    let mut system = ProcessSystem::builder(ROLE_BINARY)
        .gateways(2)
        .start()
        .await?;
    let chaos = Chaos::start(&system, ChaosPlan::default()).await?;
    chaos.wait_for_acks(SENDS_PER_PHASE, PHASE_DEADLINE).await?;
    let failed_before = chaos.failed_attempts();
    system
        .nats
        .as_mut()
        .expect("the system started its own nats-server")
        .kill()
        .await;
    // Every sender retries every 100 ms: a hundred refusals make an outage of about a second.
    wait_until(
        "sends fail while nats-server is down",
        PHASE_DEADLINE,
        || async { chaos.failed_attempts() >= failed_before + 100 },
    )
    .await?;
    system
        .nats
        .as_mut()
        .expect("the system started its own nats-server")
        .restart()
        .await?;
    chaos
        .wait_for_acks(SENDS_PER_PHASE * 2, PHASE_DEADLINE)
        .await?;
    let report = finish(
        chaos,
        "nats-server SIGKILLed, restarted from its store",
        &mut system,
    )
    .await?;
    assert!(
        report.longest_send_failure > Duration::ZERO,
        "sends failed during the outage: {report}"
    );
    Ok(())
}
