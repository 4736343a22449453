//! A small HTTP client for the REST API, returning status and parsed bodies so tests can assert on both.

use anyhow::Context;
use reqwest::StatusCode;
use schemas::{Conversation, HistoryPage, PostMessageResponse};
use serde_json::{json, Value};

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    pub fn new(http: reqwest::Client, base: String, token: String) -> Api {
        Api { http, base, token }
    }

    pub fn with_token(&self, token: impl Into<String>) -> Api {
        Api { token: token.into(), ..self.clone() }
    }

    /// Any request; the body is parsed as JSON when there is one.
    pub async fn request(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| format!("request to {path} failed"))?;
        let status = response.status();
        let text = response.text().await?;
        let value = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Ok((status, value))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<(StatusCode, Value)> {
        self.request(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<(StatusCode, Value)> {
        self.request(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn create_direct(&self, other: &str) -> anyhow::Result<Conversation> {
        let (status, body) = self.post("/v1/conversations", json!({"kind": "direct", "members": [other]})).await?;
        anyhow::ensure!(status == StatusCode::CREATED, "create direct: {status} {body}");
        Ok(serde_json::from_value(body)?)
    }

    pub async fn create_group(&self, title: &str, members: &[&str]) -> anyhow::Result<Conversation> {
        let (status, body) = self.post("/v1/conversations", json!({"kind": "group", "title": title, "members": members})).await?;
        anyhow::ensure!(status == StatusCode::CREATED, "create group: {status} {body}");
        Ok(serde_json::from_value(body)?)
    }

    /// `POST /v1/messages` with a text body.
    pub async fn send_text(&self, conversation: &str, client_msg_id: &str, text: &str) -> anyhow::Result<(StatusCode, Value)> {
        self.post("/v1/messages", json!({"conversation_id": conversation, "client_msg_id": client_msg_id, "body": {"text": text}})).await
    }

    pub async fn send_text_ok(&self, conversation: &str, client_msg_id: &str, text: &str) -> anyhow::Result<PostMessageResponse> {
        let (status, body) = self.send_text(conversation, client_msg_id, text).await?;
        anyhow::ensure!(status.is_success(), "send: {status} {body}");
        Ok(serde_json::from_value(body)?)
    }

    /// `GET /v1/conversations/{id}/messages` with a raw query such as `before=10&limit=5`.
    pub async fn history(&self, conversation: &str, query: &str) -> anyhow::Result<HistoryPage> {
        let (status, body) = self.get(&format!("/v1/conversations/{conversation}/messages?{query}")).await?;
        anyhow::ensure!(status == StatusCode::OK, "history: {status} {body}");
        Ok(serde_json::from_value(body)?)
    }
}
