//! Axum extractors for the caller's identity and for JSON bodies, queries and paths whose rejections carry PROTOCOL.md error codes.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
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

/// `axum::Json` whose rejections are `invalid` or `too_large` error bodies.
pub struct ApiJson<T>(pub T);

impl<T> FromRequest<AppState> for ApiJson<T>
where
    axum::Json<T>: FromRequest<AppState, Rejection = JsonRejection>,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<ApiJson<T>, ApiError> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::too_large("request body is too large")),
            Err(rejection) => Err(ApiError::invalid(rejection.body_text())),
        }
    }
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
