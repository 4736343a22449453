//! Analysts: aggregations that match the messages sent, scopes from the token, every query in the audit stream, and users refused.

use futures::StreamExt;
use reqwest::StatusCode;
use schemas::{AnalyticsSearchResponse, SearchAuditRecord};
use serde_json::json;
use testkit::TestSystem;

use crate::search::wait_until_indexed;

#[tokio::test]
async fn an_analysts_counts_match_the_messages_sent_and_users_are_refused() -> anyhow::Result<()> {
    let system = TestSystem::builder().with_search().start().await?;
    let (alice, bob, carol) = (system.api(0, "alice"), system.api(0, "bob"), system.api(0, "carol"));
    let group = alice.create_group("plans", &["bob"]).await?.id;
    let direct = carol.create_direct("alice").await?.id;
    for number in 0..3 {
        alice.send_text_ok(&group, &format!("a{number}"), &format!("quarterly report draft {number}")).await?;
    }
    for number in 0..2 {
        bob.send_text_ok(&group, &format!("b{number}"), &format!("report reviewed {number}")).await?;
    }
    carol.send_text_ok(&direct, "c0", "the Report is late").await?;
    carol.send_text_ok(&direct, "c1", "lunch?").await?;
    let (status, body) = alice.post("/v1/messages", json!({"conversation_id": group, "client_msg_id": "e2ee", "body": {"ciphertext": "report"}})).await?;
    assert!(status.is_success(), "{status} {body}");
    wait_until_indexed(&system, 7).await?;

    let analyst = alice.with_token(system.analyst_token("ann", None));
    let (status, body) = analyst.post("/v1/analytics/search", json!({"q": "report", "limit": 10})).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: AnalyticsSearchResponse = serde_json::from_value(body)?;
    let counts = &answer.aggregations;
    assert_eq!(counts.total, 6, "the encrypted message is invisible: {counts:?}");
    assert_eq!(answer.hits.len(), 6);
    let per_conversation: Vec<(&str, u64)> = counts.per_conversation.iter().map(|bucket| (bucket.conversation_id.as_str(), bucket.count)).collect();
    assert_eq!(per_conversation, vec![(group.as_str(), 5), (direct.as_str(), 1)]);
    let per_sender: Vec<(&str, u64)> = counts.per_sender.iter().map(|bucket| (bucket.sender.as_str(), bucket.count)).collect();
    assert_eq!(per_sender, vec![("alice", 3), ("bob", 2), ("carol", 1)]);
    let today = time::OffsetDateTime::now_utc().date().to_string();
    let per_day: Vec<(String, u64)> = counts.per_day.iter().map(|bucket| (bucket.day.clone(), bucket.count)).collect();
    // Around midnight UTC the messages may fall on two days; their sum is what must hold.
    assert_eq!(per_day.iter().map(|(_, count)| count).sum::<u64>(), 6);
    assert!(per_day.iter().any(|(day, _)| *day == today), "{per_day:?}");

    let (status, body) = analyst.post("/v1/analytics/search", json!({})).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["aggregations"]["total"], 7, "an empty query counts every indexed message: {body}");

    let scoped = alice.with_token(system.analyst_token("sam", Some(&[direct.as_str()])));
    let (status, body) = scoped.post("/v1/analytics/search", json!({"q": "report"})).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["aggregations"]["total"], 1, "{body}");
    let (status, body) = scoped.post("/v1/analytics/search", json!({"q": "report", "conversation_ids": [group]})).await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains(&group), "{body}");

    let (status, body) = alice.post("/v1/analytics/search", json!({"q": "report"})).await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "a user's token is refused: {body}");
    assert_eq!(body["error"]["code"], "forbidden");
    let (status, body) = analyst.post("/v1/analytics/search", json!({"q": "report", "conversation_ids": ["a.b"]})).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = analyst.post("/v1/analytics/search", json!({"q": "report", "limit": 101})).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let audit = audit_records(&system).await?;
    let asked: Vec<(&str, &str, Option<usize>)> =
        audit.iter().map(|record| (record.analyst.as_str(), record.q.as_str(), record.conversations.as_ref().map(Vec::len))).collect();
    assert_eq!(asked, vec![("ann", "report", None), ("ann", "", None), ("sam", "report", Some(1))], "refused queries never ran, so only these are audited");
    Ok(())
}

/// Every record in the audit stream, oldest first, read with a throwaway ordered consumer.
async fn audit_records(system: &TestSystem) -> anyhow::Result<Vec<SearchAuditRecord>> {
    let jetstream = async_nats::jetstream::new(system.connect_nats().await?);
    let mut stream = jetstream.get_stream(subjects::SEARCH_AUDIT_STREAM).await?;
    let stored = stream.info().await?.state.messages as usize;
    let consumer = stream.create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default()).await?;
    let mut messages = consumer.messages().await?.take(stored);
    let mut records = Vec::new();
    while let Some(message) = messages.next().await {
        records.push(SearchAuditRecord::from_bytes(&message?.payload)?);
    }
    Ok(records)
}
