//! Search as members see it: found within a second of the ack, only in one's own conversations, `forbidden` when naming another's; unicode, case, prefixes and phrases; encrypted bodies never found; pages; bad input.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use schemas::{Message, SearchResponse};
use serde_json::{json, Value};
use testkit::{wait_until, Api, TestSystem};

pub const WAIT: Duration = Duration::from_secs(10);

/// `q` and other query values, percent-encoded (everything but unreserved ASCII).
pub fn encode(value: &str) -> String {
    value.bytes().map(|byte| if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) { (byte as char).to_string() } else { format!("%{byte:02X}") }).collect()
}

pub async fn search(api: &Api, query: &str) -> anyhow::Result<(StatusCode, Value)> {
    api.get(&format!("/v1/search?{query}")).await
}

/// The hits for `q` (first page, up to 50); fails on anything but 200.
pub async fn hits(api: &Api, q: &str) -> anyhow::Result<Vec<(Message, String)>> {
    let (status, body) = search(api, &format!("q={}&limit=50", encode(q))).await?;
    anyhow::ensure!(status == StatusCode::OK, "search {q:?}: {status} {body}");
    let response: SearchResponse = serde_json::from_value(body)?;
    Ok(response.hits.into_iter().map(|hit| (hit.message, hit.highlight)).collect())
}

/// Waits until the indexer has committed everything in the log (lag 0) and holds `documents` messages.
pub async fn wait_until_indexed(system: &TestSystem, documents: u64) -> anyhow::Result<()> {
    wait_until(&format!("the index holds {documents} messages and has no lag"), WAIT, || async {
        system.search_status().await.is_ok_and(|status| status.lag == 0 && status.documents == documents)
    })
    .await
}

#[tokio::test]
async fn a_member_finds_a_message_within_a_second_of_its_ack_and_nobody_else_does() -> anyhow::Result<()> {
    let system = TestSystem::builder().with_search().start().await?;
    let (alice, bob, carol) = (system.api(0, "alice"), system.api(0, "bob"), system.api(0, "carol"));
    let direct = alice.create_direct("bob").await?.id;
    carol.create_group("elsewhere", &["dave"]).await?;
    alice.send_text_ok(&direct, "m1", "The quarterly BUDGET meeting moved to Thursday").await?;
    let acked = Instant::now();
    wait_until("bob finds the message", Duration::from_secs(1), || async { hits(&bob, "budget").await.is_ok_and(|found| found.len() == 1) }).await?;
    assert!(acked.elapsed() <= Duration::from_secs(1), "searchable after {:?}", acked.elapsed());

    let found = hits(&bob, "budget").await?;
    let history = bob.history(&direct, "limit=1").await?;
    assert_eq!(found[0].0, history.messages[0], "a hit carries the same message object as history");
    assert!(found[0].1.contains("<b>BUDGET</b>"), "highlight: {}", found[0].1);

    assert!(hits(&carol, "budget").await?.is_empty(), "a non-member finds nothing");
    let (status, body) = search(&carol, &format!("q=budget&conversation_id={direct}")).await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains(&direct), "{body}");

    let (status, body) = search(&alice, &format!("q=budget&conversation_id={direct}")).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["hits"].as_array().map(Vec::len), Some(1));
    Ok(())
}

#[tokio::test]
async fn unicode_case_accents_prefixes_and_phrases_behave() -> anyhow::Result<()> {
    let system = TestSystem::builder().with_search().start().await?;
    let alice = system.api(0, "alice");
    let group = alice.create_group("words", &["bob"]).await?.id;
    let texts = ["Grüße aus MÜNCHEN", "Das Café ist geöffnet", "Meeting about the roadmap", "ΕΛΛΗΝΙΚΆ κείμενα εδώ", "party 🎉 tonight"];
    for (number, text) in texts.iter().enumerate() {
        alice.send_text_ok(&group, &format!("m{number}"), text).await?;
    }
    wait_until_indexed(&system, texts.len() as u64).await?;
    let bob = system.api(0, "bob");
    for (query, expected) in [
        ("münchen", Some("Grüße aus MÜNCHEN")),
        ("MUNCHEN", Some("Grüße aus MÜNCHEN")),
        ("grusse", Some("Grüße aus MÜNCHEN")),
        ("CAFE geoffnet", Some("Das Café ist geöffnet")),
        ("meet*", Some("Meeting about the roadmap")),
        ("ROAD*", Some("Meeting about the roadmap")),
        ("münch*", Some("Grüße aus MÜNCHEN")),
        ("\"about the roadmap\"", Some("Meeting about the roadmap")),
        ("ελληνικά", Some("ΕΛΛΗΝΙΚΆ κείμενα εδώ")),
        ("Κείμενα", Some("ΕΛΛΗΝΙΚΆ κείμενα εδώ")),
        ("tonight", Some("party 🎉 tonight")),
        ("\"roadmap about\"", None),
        ("meeting café", None),
        ("zzz*", None),
    ] {
        let found = hits(&bob, query).await?;
        let texts: Vec<Option<String>> = found.iter().map(|(message, _)| message.body.text.clone()).collect();
        assert_eq!(texts, expected.map(|text| Some(text.to_owned())).into_iter().collect::<Vec<_>>(), "query {query:?}");
    }
    let highlighted = hits(&bob, "meet*").await?;
    assert!(highlighted[0].1.contains("<b>Meeting</b>"), "prefix matches are highlighted: {}", highlighted[0].1);
    Ok(())
}

#[tokio::test]
async fn an_end_to_end_encrypted_message_is_never_found() -> anyhow::Result<()> {
    let system = TestSystem::builder().with_search().start().await?;
    let alice = system.api(0, "alice");
    let direct = alice.create_direct("bob").await?.id;
    let (status, body) = alice.post("/v1/messages", json!({"conversation_id": direct, "client_msg_id": "secret", "body": {"ciphertext": "sealedenvelope"}})).await?;
    assert!(status.is_success(), "{status} {body}");
    alice.send_text_ok(&direct, "plain", "an open postcard").await?;
    // Both entries are behind the index's position, and only the plain one became a document.
    wait_until_indexed(&system, 1).await?;
    assert!(hits(&alice, "sealedenvelope").await?.is_empty());
    assert!(hits(&alice, "sealed*").await?.is_empty());
    assert_eq!(hits(&alice, "postcard").await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn pages_cover_every_hit_once() -> anyhow::Result<()> {
    let system = TestSystem::builder().with_search().start().await?;
    let alice = system.api(0, "alice");
    let group = alice.create_group("pages", &["bob"]).await?.id;
    for number in 1..=25 {
        alice.send_text_ok(&group, &format!("m{number}"), &format!("page item {number}")).await?;
    }
    wait_until_indexed(&system, 25).await?;
    let mut seen = std::collections::BTreeSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let cursor_parameter = cursor.as_deref().map(|cursor| format!("&cursor={}", encode(cursor))).unwrap_or_default();
        let (status, body) = search(&alice, &format!("q=page&limit=10{cursor_parameter}")).await?;
        assert_eq!(status, StatusCode::OK, "{body}");
        // Sent between pages: a later page must not shift because of it.
        alice.send_text_ok(&group, &format!("late{pages}"), "page item late").await?;
        let response: SearchResponse = serde_json::from_value(body)?;
        for hit in &response.hits {
            assert!(seen.insert(hit.message.seq), "seq {} appeared twice", hit.message.seq);
        }
        pages += 1;
        match response.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, (1..=25).collect());
    Ok(())
}

#[tokio::test]
async fn bad_search_input_is_a_clear_error() -> anyhow::Result<()> {
    let system = TestSystem::builder().with_search().start().await?;
    let alice = system.api(0, "alice");
    alice.create_direct("bob").await?;
    let long_query = "a".repeat(257);
    for query in [
        String::new(),
        "q=".to_owned(),
        "q=%20%20".to_owned(),
        format!("q={long_query}"),
        "q=hi&limit=0".to_owned(),
        "q=hi&limit=51".to_owned(),
        "q=hi&limit=ten".to_owned(),
        "q=hi&conversation_id=a.b".to_owned(),
        "q=hi&conversation_id=a*".to_owned(),
        "q=hi&conversation_id=%3E".to_owned(),
        "q=hi&cursor=garbage".to_owned(),
        "q=hi&cursor=990.1.1".to_owned(),
        "q=*".to_owned(),
        "q=%21%21%21".to_owned(),
    ] {
        let (status, body) = search(&alice, &query).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "query {query:?}: {body}");
        assert_eq!(body["error"]["code"], "invalid", "query {query:?}: {body}");
        assert!(!body["error"]["message"].as_str().unwrap_or_default().is_empty());
    }
    let (status, _) = alice.with_token("garbage").get("/v1/search?q=hi").await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    Ok(())
}
