//! Authentication: missing, expired, forged and `alg:none` tokens are refused with 401 before any upgrade; dev sign-in only in dev mode.

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use schemas::TokenClaims;
use serde_json::json;
use testkit::{TestSystem, WsClient};
use tokio_tungstenite::tungstenite;

pub(crate) fn sign(claims: &TokenClaims, secret: &str) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

pub(crate) fn claims(user: &str, expires_in_seconds: i64) -> TokenClaims {
    let exp = time::OffsetDateTime::now_utc().unix_timestamp() + expires_in_seconds;
    TokenClaims { sub: user.to_owned(), exp: exp as u64, iss: None, aud: None, role: None, analyst_conversations: None }
}

pub(crate) fn unsigned_none_token(user: &str) -> String {
    let encode = |value: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string());
    format!("{}.{}.", encode(json!({"alg": "none", "typ": "JWT"})), encode(serde_json::to_value(claims(user, 3600)).unwrap()))
}

pub(crate) async fn websocket_status(system: &TestSystem, token: &str) -> Option<u16> {
    match WsClient::connect(&system.ws_url(0), token, Some("d1"), false).await {
        Ok(_) => Some(101),
        Err(error) => match error.downcast_ref::<tungstenite::Error>() {
            Some(tungstenite::Error::Http(response)) => Some(response.status().as_u16()),
            _ => None,
        },
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_before_the_upgrade_and_on_http() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let secret = system.gateway_config().jwt.secret.clone();
    let cases = [
        ("missing", String::new()),
        ("garbage", "not-a-jwt".to_owned()),
        ("expired", sign(&claims("alice", -3600), &secret)),
        ("forged", sign(&claims("alice", 3600), "some-other-secret-that-is-also-long-enough")),
        ("alg none", unsigned_none_token("alice")),
        ("bad subject", sign(&claims("a.b", 3600), &secret)),
    ];
    for (name, token) in &cases {
        assert_eq!(websocket_status(&system, token).await, Some(401), "websocket with {name} token");
        let (status, body) = system.api(0, "alice").with_token(token.clone()).get("/v1/conversations").await?;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "http with {name} token: {body}");
        assert_eq!(body["error"]["code"], json!("unauthorized"));
    }
    assert_eq!(websocket_status(&system, &sign(&claims("alice", 3600), &secret)).await, Some(101), "a good token upgrades");
    Ok(())
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() -> anyhow::Result<()> {
    let system = TestSystem::builder()
        .gateway_config(|config| {
            config.jwt.issuer = Some("https://id.example".to_owned());
            config.jwt.audience = Some("natter".to_owned());
        })
        .start()
        .await?;
    let secret = system.gateway_config().jwt.secret.clone();
    let mut right = claims("alice", 3600);
    right.iss = Some("https://id.example".to_owned());
    right.aud = Some("natter".to_owned());
    let mut wrong_issuer = right.clone();
    wrong_issuer.iss = Some("https://evil.example".to_owned());
    let mut wrong_audience = right.clone();
    wrong_audience.aud = Some("other-app".to_owned());
    assert_eq!(websocket_status(&system, &sign(&right, &secret)).await, Some(101));
    assert_eq!(websocket_status(&system, &sign(&wrong_issuer, &secret)).await, Some(401));
    assert_eq!(websocket_status(&system, &sign(&wrong_audience, &secret)).await, Some(401));
    assert_eq!(websocket_status(&system, &sign(&claims("alice", 3600), &secret)).await, Some(401), "iss and aud are required once configured");
    Ok(())
}

#[tokio::test]
async fn dev_sign_in_mints_working_tokens_only_in_dev_mode() -> anyhow::Result<()> {
    let system = TestSystem::start().await?;
    let http = reqwest::Client::new();
    let response = http.post(format!("{}/v1/dev/token", system.http_url(0))).json(&json!({"user": "zoe"})).send().await?;
    assert_eq!(response.status(), StatusCode::OK);
    let token = response.json::<serde_json::Value>().await?["token"].as_str().unwrap().to_owned();
    let (status, _) = system.api(0, "zoe").with_token(token).get("/v1/conversations").await?;
    assert_eq!(status, StatusCode::OK);
    let response = http.post(format!("{}/v1/dev/token", system.http_url(0))).json(&json!({"user": "z*"})).send().await?;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let production = TestSystem::builder().gateway_config(|config| config.dev_mode = false).start().await?;
    let response = http.post(format!("{}/v1/dev/token", production.http_url(0))).json(&json!({"user": "zoe"})).send().await?;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    Ok(())
}
