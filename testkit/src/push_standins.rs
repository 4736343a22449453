//! Local stand-ins for FCM (with Google's OAuth2 token endpoint), APNs (HTTP/2, ES256 provider tokens) and a Web Push service, speaking their real wire formats on free ports.
//!
//! Each records every request it gets (with when, and whether its credentials checked out) and
//! answers from a script of responses, then with success. Tests point the push worker at them.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Form, Router};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use schemas::push_providers::{ApnsProviderClaims, GoogleAssertionClaims, OAuthTokenResponse, VapidClaims};
use tokio::task::JoinHandle;

/// The test keys in `testkit/fixtures/push/` (made with openssl; they sign nothing real).
pub fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join("push").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// One scripted answer: status, extra headers, body.
#[derive(Debug, Clone)]
pub struct ScriptedAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl ScriptedAnswer {
    pub fn status(status: u16) -> ScriptedAnswer {
        ScriptedAnswer { status, headers: Vec::new(), body: String::new() }
    }
    pub fn with_header(mut self, name: &str, value: &str) -> ScriptedAnswer {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
    pub fn with_body(mut self, body: impl Into<String>) -> ScriptedAnswer {
        self.body = body.into();
        self
    }
}

/// A request a stand-in received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub received_at: Instant,
    pub path: String,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// `Ok` when the request's credentials verified (OAuth bearer, APNs provider token, VAPID), else why not.
    pub credentials: Result<(), String>,
}

#[derive(Default)]
struct Recorder {
    requests: Mutex<Vec<RecordedRequest>>,
    script: Mutex<VecDeque<ScriptedAnswer>>,
    /// When set, every request gets this answer (a provider that always fails).
    always: Mutex<Option<ScriptedAnswer>>,
    issued_tokens: Mutex<HashSet<String>>,
}

impl Recorder {
    fn record(&self, request: RecordedRequest, success: u16) -> Response {
        self.requests.lock().unwrap().push(request);
        let answer = self
            .always
            .lock()
            .unwrap()
            .clone()
            .or_else(|| self.script.lock().unwrap().pop_front())
            .unwrap_or_else(|| ScriptedAnswer::status(success));
        let mut response = (StatusCode::from_u16(answer.status).unwrap(), answer.body).into_response();
        for (name, value) in answer.headers {
            response.headers_mut().insert(axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        response
    }
}

/// A running stand-in: its base URL, what it received, and its script.
pub struct StandIn {
    pub base_url: String,
    recorder: Arc<Recorder>,
    task: JoinHandle<()>,
}

impl StandIn {
    async fn serve(router: Router, recorder: Arc<Recorder>) -> anyhow::Result<StandIn> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        // axum::serve speaks HTTP/1.1 and, with the `http2` feature, HTTP/2 with prior knowledge (h2c).
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(StandIn { base_url, recorder, task })
    }

    /// Answers the next requests with these, in order, then with success again.
    pub fn script(&self, answers: impl IntoIterator<Item = ScriptedAnswer>) {
        self.recorder.script.lock().unwrap().extend(answers);
    }

    /// Answers every request with `answer` from now on.
    pub fn always(&self, answer: ScriptedAnswer) {
        *self.recorder.always.lock().unwrap() = Some(answer);
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.recorder.requests.lock().unwrap().clone()
    }

    /// Access tokens the OAuth endpoint handed out (FCM only).
    pub fn issued_tokens(&self) -> HashSet<String> {
        self.recorder.issued_tokens.lock().unwrap().clone()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn recorded(path: String, version: Version, headers: HeaderMap, body: Bytes, credentials: Result<(), String>) -> RecordedRequest {
    RecordedRequest { received_at: Instant::now(), path, version, headers, body, credentials }
}

fn bearer(headers: &HeaderMap, scheme: &str) -> Option<String> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (given, token) = value.split_once(' ')?;
    given.eq_ignore_ascii_case(scheme).then(|| token.trim().to_owned())
}

// ---------------------------------------------------------------- FCM and Google OAuth2

#[derive(Clone)]
struct FcmState {
    recorder: Arc<Recorder>,
    service_account_public_key: Arc<DecodingKey>,
    token_url: Arc<Mutex<String>>,
    client_email: String,
}

/// FCM HTTP v1 plus Google's token endpoint (`/token`): the RS256 assertion is checked against the
/// service account's public key, and sends must carry a bearer the endpoint issued.
pub async fn start_fcm(client_email: &str) -> anyhow::Result<StandIn> {
    let recorder = Arc::new(Recorder::default());
    let state = FcmState {
        recorder: recorder.clone(),
        service_account_public_key: Arc::new(DecodingKey::from_rsa_pem(fixture("fcm-service-account.pub.pem").as_bytes())?),
        token_url: Arc::default(),
        client_email: client_email.to_owned(),
    };
    let router = Router::new()
        .route("/token", post(fcm_token))
        .route("/v1/projects/{project}/{verb}", post(fcm_send))
        .with_state(state.clone());
    let stand_in = StandIn::serve(router, recorder).await?;
    *state.token_url.lock().unwrap() = format!("{}/token", stand_in.base_url);
    Ok(stand_in)
}

/// A service-account key file for [`start_fcm`]'s stand-in.
pub fn fcm_service_account_json(stand_in: &StandIn, project: &str, client_email: &str) -> String {
    serde_json::json!({
        "type": "service_account",
        "project_id": project,
        "private_key": fixture("fcm-service-account.key.pem"),
        "client_email": client_email,
        "token_uri": format!("{}/token", stand_in.base_url),
    })
    .to_string()
}

/// The push worker's FCM settings for [`start_fcm`]'s stand-in (project `natter-test`).
pub fn fcm_settings(stand_in: &StandIn, client_email: &str) -> push::providers::FcmSettings {
    push::providers::FcmSettings { service_account_json: fcm_service_account_json(stand_in, "natter-test", client_email), base_url: stand_in.base_url.clone() }
}

/// The push worker's APNs settings for [`start_apns`]'s stand-in, signing with the fixture key.
pub fn apns_settings(stand_in: &StandIn, key_id: &str, team_id: &str, topic: &str) -> push::providers::ApnsSettings {
    push::providers::ApnsSettings {
        key_pem: fixture("apns.p8"),
        key_id: key_id.to_owned(),
        team_id: team_id.to_owned(),
        topic: topic.to_owned(),
        base_url: stand_in.base_url.clone(),
        token_renewal: push::providers::DEFAULT_APNS_TOKEN_RENEWAL,
    }
}

async fn fcm_token(State(state): State<FcmState>, Form(form): Form<Vec<(String, String)>>) -> Response {
    let field = |name: &str| form.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone()).unwrap_or_default();
    if field("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
        return (StatusCode::BAD_REQUEST, r#"{"error":"unsupported_grant_type"}"#).into_response();
    }
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[state.token_url.lock().unwrap().clone()]);
    validation.set_issuer(std::slice::from_ref(&state.client_email));
    match jsonwebtoken::decode::<GoogleAssertionClaims>(&field("assertion"), &state.service_account_public_key, &validation) {
        Ok(claims) if claims.claims.scope.split(' ').any(|scope| scope == "https://www.googleapis.com/auth/firebase.messaging") => {
            let token = format!("ya29.standin-{}", ulid_like());
            state.recorder.issued_tokens.lock().unwrap().insert(token.clone());
            let answer = OAuthTokenResponse { access_token: token, expires_in: 3599, token_type: "Bearer".to_owned() };
            axum::Json(answer).into_response()
        }
        Ok(_) => (StatusCode::BAD_REQUEST, r#"{"error":"invalid_scope"}"#).into_response(),
        Err(error) => (StatusCode::BAD_REQUEST, format!(r#"{{"error":"invalid_grant","error_description":"{error}"}}"#)).into_response(),
    }
}

async fn fcm_send(State(state): State<FcmState>, Path((project, verb)): Path<(String, String)>, version: Version, headers: HeaderMap, body: Bytes) -> Response {
    if verb != "messages:send" {
        return StatusCode::NOT_FOUND.into_response();
    }
    let credentials = match bearer(&headers, "Bearer") {
        Some(token) if state.recorder.issued_tokens.lock().unwrap().contains(&token) => Ok(()),
        Some(token) => Err(format!("bearer {token} was never issued")),
        None => Err("no bearer".to_owned()),
    };
    let path = format!("/v1/projects/{project}/{verb}");
    if credentials.is_err() {
        state.recorder.requests.lock().unwrap().push(recorded(path, version, headers, body, credentials));
        return (StatusCode::UNAUTHORIZED, r#"{"error":{"code":401,"status":"UNAUTHENTICATED"}}"#).into_response();
    }
    state.recorder.record(recorded(path, version, headers, body, credentials), 200)
}

/// FCM's answer for a token that no longer reaches an install.
pub fn fcm_unregistered() -> ScriptedAnswer {
    ScriptedAnswer::status(404).with_body(
        r#"{"error":{"code":404,"message":"Requested entity was not found.","status":"NOT_FOUND","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}"#,
    )
}

fn ulid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

// ---------------------------------------------------------------- APNs

#[derive(Clone)]
struct ApnsState {
    recorder: Arc<Recorder>,
    provider_public_key: Arc<DecodingKey>,
    key_id: String,
    team_id: String,
}

/// APNs over HTTP/2 (h2c): checks the ES256 provider token against the `.p8` key's public half, its `kid` and `iss`.
pub async fn start_apns(key_id: &str, team_id: &str) -> anyhow::Result<StandIn> {
    let recorder = Arc::new(Recorder::default());
    let state = ApnsState {
        recorder: recorder.clone(),
        provider_public_key: Arc::new(DecodingKey::from_ec_pem(fixture("apns.pub.pem").as_bytes())?),
        key_id: key_id.to_owned(),
        team_id: team_id.to_owned(),
    };
    let router = Router::new().route("/3/device/{token}", post(apns_send)).with_state(state);
    StandIn::serve(router, recorder).await
}

async fn apns_send(State(state): State<ApnsState>, Path(token): Path<String>, version: Version, headers: HeaderMap, body: Bytes) -> Response {
    let credentials = verify_apns_token(&state, &headers);
    let path = format!("/3/device/{token}");
    if let Err(reason) = &credentials {
        let reason = reason.clone();
        state.recorder.requests.lock().unwrap().push(recorded(path, version, headers, body, credentials));
        return (StatusCode::FORBIDDEN, format!(r#"{{"reason":"InvalidProviderToken","detail":"{reason}"}}"#)).into_response();
    }
    state.recorder.record(recorded(path, version, headers, body, credentials), 200)
}

fn verify_apns_token(state: &ApnsState, headers: &HeaderMap) -> Result<(), String> {
    let token = bearer(headers, "bearer").ok_or("no provider token")?;
    let header = jsonwebtoken::decode_header(&token).map_err(|error| error.to_string())?;
    if header.alg != Algorithm::ES256 || header.kid.as_deref() != Some(state.key_id.as_str()) {
        return Err(format!("wrong header {header:?}"));
    }
    let mut validation = Validation::new(Algorithm::ES256);
    validation.required_spec_claims = HashSet::new();
    validation.validate_exp = false;
    validation.set_issuer(std::slice::from_ref(&state.team_id));
    let claims = jsonwebtoken::decode::<ApnsProviderClaims>(&token, &state.provider_public_key, &validation).map_err(|error| error.to_string())?;
    let age = unix_now().saturating_sub(claims.claims.iat);
    if age > 3600 {
        return Err(format!("provider token is {age} s old"));
    }
    Ok(())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

// ---------------------------------------------------------------- Web Push

#[derive(Clone)]
struct WebPushState {
    recorder: Arc<Recorder>,
    vapid_public_key: Arc<DecodingKey>,
}

/// A push service: `POST /push/{subscription}` with an aes128gcm body and a VAPID `Authorization`, checked against the VAPID public key.
pub async fn start_webpush() -> anyhow::Result<StandIn> {
    let recorder = Arc::new(Recorder::default());
    let state = WebPushState { recorder: recorder.clone(), vapid_public_key: Arc::new(DecodingKey::from_ec_pem(fixture("vapid.pub.pem").as_bytes())?) };
    let router = Router::new().route("/push/{subscription}", post(webpush_receive)).with_state(state);
    StandIn::serve(router, recorder).await
}

async fn webpush_receive(State(state): State<WebPushState>, Path(subscription): Path<String>, version: Version, headers: HeaderMap, body: Bytes) -> Response {
    let credentials = verify_vapid(&state, &headers);
    let path = format!("/push/{subscription}");
    if credentials.is_err() {
        state.recorder.requests.lock().unwrap().push(recorded(path, version, headers, body, credentials));
        return StatusCode::FORBIDDEN.into_response();
    }
    state.recorder.record(recorded(path, version, headers, body, credentials), 201)
}

fn verify_vapid(state: &WebPushState, headers: &HeaderMap) -> Result<(), String> {
    let value = headers.get(axum::http::header::AUTHORIZATION).and_then(|value| value.to_str().ok()).ok_or("no Authorization")?;
    let parameters = value.strip_prefix("vapid ").ok_or("not a vapid Authorization")?;
    let token = parameters.split(',').map(str::trim).find_map(|part| part.strip_prefix("t=")).ok_or("no t=")?;
    // The audience is the push service's origin: this stand-in's, as the request reached it.
    let host = headers.get(axum::http::header::HOST).and_then(|value| value.to_str().ok()).ok_or("no Host")?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[format!("http://{host}")]);
    let claims = jsonwebtoken::decode::<VapidClaims>(token, &state.vapid_public_key, &validation).map_err(|error| error.to_string())?;
    if !claims.claims.sub.starts_with("mailto:") && !claims.claims.sub.starts_with("https:") {
        return Err(format!("bad sub {}", claims.claims.sub));
    }
    if headers.get(axum::http::header::CONTENT_ENCODING).and_then(|value| value.to_str().ok()) != Some("aes128gcm") {
        return Err("Content-Encoding is not aes128gcm".to_owned());
    }
    Ok(())
}

/// A browser's side of a Web Push subscription: its P-256 key pair and auth secret, to decrypt what arrives.
pub struct WebPushSubscriber {
    secret: p256::SecretKey,
    auth: [u8; 16],
}

impl WebPushSubscriber {
    /// A fixed key per `seed`, so runs are reproducible.
    pub fn new(seed: u8) -> WebPushSubscriber {
        let secret = p256::SecretKey::from_slice(&[seed.max(1); 32]).expect("a small constant is a valid P-256 scalar");
        WebPushSubscriber { secret, auth: [seed; 16] }
    }

    /// The `subscription` of a registration, as `PushSubscription.toJSON()` gives it.
    pub fn subscription_json(&self, endpoint: &str) -> serde_json::Value {
        use base64::Engine as _;
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let encode = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let p256dh = encode(self.secret.public_key().to_encoded_point(false).as_bytes());
        serde_json::json!({"endpoint": endpoint, "expirationTime": null, "keys": {"p256dh": p256dh, "auth": encode(&self.auth)}})
    }

    /// Decrypts an RFC 8291 aes128gcm body sent to this subscription.
    pub fn decrypt(&self, body: &[u8]) -> anyhow::Result<Vec<u8>> {
        web_push_native::decrypt(body.to_vec(), &self.secret, &web_push_native::Auth::from(self.auth)).map_err(|error| anyhow::anyhow!("decrypt: {error}"))
    }
}
