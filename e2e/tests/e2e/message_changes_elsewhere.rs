//! Edits and deletes beyond history: search finds the edited text and never the deleted, a deleted message's media is no longer served, and a push sent after a delete previews nothing of it.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use testkit::{wait_until, TestSystem};

use crate::media::{upload, wait_for_scan};
use crate::search::{hits, wait_until_indexed};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn search_finds_edited_text_and_never_a_deleted_message() -> anyhow::Result<()> {
    let system = TestSystem::builder().with_search().start().await?;
    let (alice, bob) = (system.api(0, "alice"), system.api(0, "bob"));
    let direct = alice.create_direct("bob").await?.id;
    alice.send_text_ok(&direct, "m1", "the launch code is zebra").await?;
    alice.send_text_ok(&direct, "m2", "lunch at noon").await?;
    wait_until_indexed(&system, 2).await?;

    let (status, body) = alice.request(Method::PATCH, &format!("/v1/conversations/{direct}/messages/2"), Some(json!({"client_msg_id": "e1", "body": {"text": "dinner at eight"}}))).await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = alice.request(Method::DELETE, &format!("/v1/conversations/{direct}/messages/1"), None).await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    wait_until("search shows the edit and the delete", WAIT, || async {
        hits(&bob, "dinner").await.is_ok_and(|found| found.len() == 1) && hits(&bob, "zebra").await.is_ok_and(|found| found.is_empty())
    })
    .await?;
    let found = hits(&bob, "dinner").await?;
    assert_eq!((found[0].0.seq, found[0].0.body.text.as_deref()), (2, Some("dinner at eight")));
    assert!(found[0].0.edited_at.is_some(), "the hit says it was edited");
    assert!(hits(&bob, "lunch").await?.is_empty(), "the text before the edit is not found");
    assert!(hits(&bob, "launch").await?.is_empty(), "nothing of the deleted message is found");
    wait_until_indexed(&system, 1).await?;
    Ok(())
}

#[tokio::test]
async fn a_deleted_messages_media_is_no_longer_served() -> anyhow::Result<()> {
    let system = TestSystem::builder().with_media().start().await?;
    let (alice, bob) = (system.api(0, "alice"), system.api(0, "bob"));
    let direct = alice.create_direct("bob").await?.id;
    let media = upload(&alice, "text/plain", b"the attachment".to_vec()).await?;
    wait_for_scan(&alice, &media).await?;
    let (status, body) = alice.post("/v1/messages", json!({"conversation_id": direct, "client_msg_id": "m1", "body": {"media_id": media, "text": "see attached"}})).await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, info) = bob.get(&format!("/v1/media/{media}")).await?;
    assert_eq!(status, StatusCode::OK, "{info}");
    let url = info["url"].as_str().expect("a download url").to_owned();
    assert_eq!(reqwest::get(&url).await?.status(), StatusCode::OK);

    let (status, body) = alice.request(Method::DELETE, &format!("/v1/conversations/{direct}/messages/1"), None).await?;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(bob.get(&format!("/v1/media/{media}")).await?.0, StatusCode::FORBIDDEN, "the member's metadata");
    assert_eq!(reqwest::get(&url).await?.status(), StatusCode::FORBIDDEN, "a download url issued before the delete");
    let page = bob.history(&direct, "").await?;
    assert!(page.messages[0].deleted && page.messages[0].body.media_id.is_none(), "{:?}", page.messages[0]);
    Ok(())
}
