//! Axum extractors for the caller's identity and for JSON bodies, queries and paths whose rejections carry PROTOCOL.md error codes.

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use subjects::Id;

use crate::api_error::ApiError;
use crate::state::AppState;

/// The user a valid `Authorization: Bearer` token names.
pub struct Caller(pub Id);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        let token = bearer_token(&parts.headers).ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        Ok(Caller(state.auth.verify(&token)?))
    }
}

/// A caller whose token carries the analyst role, with its scope; any other valid token is `forbidden`.
pub struct Analyst {
    pub user: Id,
    pub scope: crate::auth::AnalystScope,
}

impl FromRequestParts<AppState> for Analyst {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Analyst, ApiError> {
        let token = bearer_token(&parts.headers).ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        let verified = state.auth.verify_claims(&token)?;
        let scope = verified.analyst_scope.ok_or_else(|| ApiError::forbidden("this endpoint is for analysts; the token has no analyst role"))?;
        Ok(Analyst { user: verified.user, scope })
    }
}

pub fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
}

/// A JSON object body whose rejections are `invalid` or `too_large` error bodies.
///
/// Only an object is accepted: serde would also read a struct from a JSON array (`[]` as "every field
/// absent"), and a garbage body must not, say, clear a setting.
pub struct ApiJson<T>(pub T);

impl<T> FromRequest<AppState> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<ApiJson<T>, ApiError> {
        if !is_json_content_type(request.headers()) {
            return Err(ApiError::invalid("expected a request with Content-Type: application/json"));
        }
        let body = match Bytes::from_request(request, state).await {
            Ok(body) => body,
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => return Err(ApiError::too_large("request body is too large")),
            Err(rejection) => return Err(ApiError::invalid(rejection.body_text())),
        };
        if body.trim_ascii_start().first() != Some(&b'{') {
            return Err(ApiError::invalid("the request body must be a JSON object"));
        }
        match axum::Json::<T>::from_bytes(&body) {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(ApiError::invalid(rejection.body_text())),
        }
    }
}

/// `application/json` or any `+json` type, as axum's own `Json` accepts.
fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()) else {
        return false;
    };
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// `axum::extract::Query` whose rejection is an `invalid` error body, not axum's plain text.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    axum::extract::Query<T>: FromRequestParts<S, Rejection = QueryRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<ApiQuery<T>, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(ApiError::invalid(rejection.body_text())),
        }
    }
}

/// `axum::extract::Path` whose rejection (a segment that is not UTF-8 once percent-decoded) is an `invalid` error body.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    axum::extract::Path<T>: FromRequestParts<S, Rejection = PathRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<ApiPath<T>, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(rejection) if rejection.status().is_server_error() => {
                tracing::error!(%rejection, "a route and its path extractor disagree");
                Err(ApiError::new(schemas::ErrorCode::Internal, "internal error"))
            }
            Err(rejection) => Err(ApiError::invalid(rejection.body_text())),
        }
    }
}
