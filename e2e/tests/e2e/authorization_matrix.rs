//! The authorization matrix: every endpoint and conversation-scoped frame against every kind of bad credential and every outsider, answering the right code and changing nothing.

use std::time::Duration;

use reqwest::Method;
use schemas::{ErrorCode, ServerFrame};
use serde_json::{json, Value};
use testkit::TestSystem;

use crate::auth::{claims, sign, unsigned_none_token, websocket_status};

const WAIT: Duration = Duration::from_secs(10);

/// One HTTP request of the API; `{conv}` and `{media}` are filled in per test.
struct Endpoint {
    method: Method,
    path: &'static str,
    body: Option<Value>,
    /// What a signed-in user who is not (or no longer) a member gets; None = not conversation-scoped.
    outsider: Option<u16>,
}

fn endpoints() -> Vec<Endpoint> {
    let endpoint = |method: Method, path, body: Option<Value>, outsider| Endpoint { method, path, body, outsider };
    vec![
        endpoint(Method::GET, "/v1/conversations", None, None),
        endpoint(Method::POST, "/v1/conversations", Some(json!({"kind":"group","title":"x","members":[]})), None),
        // Existence is not revealed to outsiders: not_found rather than forbidden.
        endpoint(Method::GET, "/v1/conversations/{conv}", None, Some(404)),
        endpoint(Method::POST, "/v1/conversations/{conv}/members", Some(json!({"user":"mallory"})), Some(404)),
        endpoint(Method::DELETE, "/v1/conversations/{conv}/members/bob", None, Some(404)),
        endpoint(Method::GET, "/v1/conversations/{conv}/messages", None, Some(403)),
        endpoint(Method::POST, "/v1/messages", Some(json!({"conversation_id":"{conv}","client_msg_id":"intruder","body":{"text":"hi"}})), Some(403)),
        endpoint(Method::POST, "/v1/receipts", Some(json!({"conversation_id":"{conv}","seq":1,"kind":"read"})), Some(403)),
        endpoint(Method::PUT, "/v1/conversations/{conv}/settings", Some(json!({"muted_until":null})), Some(403)),
        endpoint(Method::GET, "/v1/search?q=plans&conversation_id={conv}", None, Some(403)),
        endpoint(Method::POST, "/v1/analytics/search", Some(json!({"q":"plans"})), Some(403)),
        // Media ids are unguessable ULIDs, and the media API says forbidden (documented in docs/protocol.md).
        endpoint(Method::GET, "/v1/media/{media}", None, Some(403)),
        endpoint(Method::POST, "/v1/media", Some(json!({"content_type":"image/png","size":10})), None),
        endpoint(Method::POST, "/v1/devices/d1/push", Some(json!({"provider":"fcm","token":"t"})), None),
        endpoint(Method::PUT, "/v1/settings/notifications", Some(json!({"do_not_disturb_until":null})), None),
    ]
}

fn fill(text: &str, conversation: &str, media: &str) -> String {
    text.replace("{conv}", conversation).replace("{media}", media)
}

#[tokio::test]
async fn every_endpoint_refuses_bad_credentials_and_outsiders_and_nothing_changes() -> anyhow::Result<()> {
    let system = TestSystem::builder().gateway_config(|config| config.jwt.audience = Some("natter".to_owned())).start().await?;
    let secret = system.gateway_config().jwt.secret.clone();
    let valid = |user: &str| {
        let mut claims = claims(user, 3600);
        claims.aud = Some("natter".to_owned());
        sign(&claims, &secret)
    };
    let alice = system.api(0, "alice").with_token(valid("alice"));
    let group = alice.create_group("plans", &["bob", "dave"]).await?.id;
    alice.send_text_ok(&group, "a1", "the plans").await?;
    let (status, media) = alice.post("/v1/media", json!({"content_type":"image/png","size":10})).await?;
    anyhow::ensure!(status.is_success(), "{media}");
    let media = media["media_id"].as_str().unwrap_or_default().to_owned();
    let (status, _) = alice.request(Method::DELETE, &format!("/v1/conversations/{group}/members/dave"), None).await?;
    anyhow::ensure!(status.is_success(), "removing dave: {status}");

    let mut expired = claims("alice", -3600);
    expired.aud = Some("natter".to_owned());
    let mut wrong_audience = claims("alice", 3600);
    wrong_audience.aud = Some("another-app".to_owned());
    let mut forged = claims("alice", 3600);
    forged.aud = Some("natter".to_owned());
    let bad_credentials = [
        ("no token", String::new()),
        ("expired", sign(&expired, &secret)),
        ("forged signature", sign(&forged, "a-different-secret-that-is-long-enough-too")),
        ("alg none", unsigned_none_token("alice")),
        ("wrong audience", sign(&wrong_audience, &secret)),
    ];
    let mut mismatches = Vec::new();
    for endpoint in endpoints() {
        let path = fill(endpoint.path, &group, &media);
        let body = endpoint.body.as_ref().map(|body| serde_json::from_str::<Value>(&fill(&body.to_string(), &group, &media))).transpose()?;
        for (credential, token) in &bad_credentials {
            let (status, reply) = alice.with_token(token.clone()).request(endpoint.method.clone(), &path, body.clone()).await?;
            if status.as_u16() != 401 || reply["error"]["code"] != "unauthorized" {
                mismatches.push(format!("{} {path} with {credential}: {status} {reply}", endpoint.method));
            }
        }
        if let Some(expected) = endpoint.outsider {
            for outsider in ["carol", "dave"] {
                let (status, reply) = alice.with_token(valid(outsider)).request(endpoint.method.clone(), &path, body.clone()).await?;
                if status.as_u16() != expected {
                    mismatches.push(format!("{} {path} as {outsider}: expected {expected}, got {status} {reply}", endpoint.method));
                }
            }
        }
    }
    for (credential, token) in &bad_credentials {
        if websocket_status(&system, token).await != Some(401) {
            mismatches.push(format!("GET /v1/ws with {credential}: not 401"));
        }
    }
    assert!(mismatches.is_empty(), "authorization mismatches:\n{}", mismatches.join("\n"));

    // Conversation-scoped frames from an outsider's socket: forbidden, and the socket stays open.
    for outsider in ["carol", "dave"] {
        let mut socket = testkit::WsClient::connect(&system.ws_url(0), &valid(outsider), Some("phone"), false).await?;
        let frames = [
            json!({"type":"send","id":"f1","conversation_id": group,"client_msg_id":"sneak","body":{"text":"hi"}}),
            json!({"type":"read","id":"f2","conversation_id": group,"seq":1}),
            json!({"type":"typing","id":"f3","conversation_id": group}),
            json!({"type":"sync","id":"f4","cursors":{group.clone(): 0}}),
        ];
        for frame in frames {
            let id = frame["id"].as_str().unwrap_or_default().to_owned();
            socket.send_json(frame).await?;
            match socket.reply_to(&id, WAIT).await? {
                ServerFrame::Error { code: ErrorCode::Forbidden, .. } => {}
                other => anyhow::bail!("{outsider}'s {id} on {group}: expected forbidden, got {other:?}"),
            }
        }
        socket.ping().await?;
    }

    // Nothing changed: the one message, the two remaining members, no mute for anyone.
    let history = alice.history(&group, "").await?.messages;
    assert_eq!(history.iter().map(|message| message.client_msg_id.as_str()).collect::<Vec<_>>(), ["a1"]);
    let (_, conversation) = alice.get(&format!("/v1/conversations/{group}")).await?;
    let members: Vec<&str> = conversation["members"].as_array().into_iter().flatten().filter_map(|member| member["user"].as_str()).collect();
    assert_eq!(members, ["alice", "bob"]);
    Ok(())
}
