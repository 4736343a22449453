//! Machine-readable error codes shared by WebSocket `error` frames and HTTP error bodies.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Unauthorized,
    Forbidden,
    NotFound,
    Invalid,
    TooLarge,
    RateLimited,
    Unavailable,
    Internal,
    /// The message's content was refused by the server's content policy (deny-list or spam signal).
    ContentRefused,
}

impl ErrorCode {
    /// The HTTP status PROTOCOL.md pairs with each code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Invalid => 400,
            ErrorCode::TooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
            ErrorCode::ContentRefused => 422,
        }
    }
}
