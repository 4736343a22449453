//! Errors the store reports, split by what a caller does about them.

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Invalid(String),
    /// NATS is unreachable or timed out: the caller may retry later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("storage failure: {0}")]
    Internal(String),
}

impl StoreError {
    pub fn unavailable(error: impl std::fmt::Display) -> StoreError {
        StoreError::Unavailable(error.to_string())
    }

    pub fn internal(error: impl std::fmt::Display) -> StoreError {
        StoreError::Internal(error.to_string())
    }
}

/// Most JetStream failures are timeouts or lost connections; the kind decides `unavailable` vs `internal`.
pub(crate) fn from_nats<E: std::fmt::Display + std::fmt::Debug>(context: &str, error: E) -> StoreError {
    let text = format!("{context}: {error}");
    let lower = text.to_lowercase();
    // "no stream found" is what a publish gets while the stream (or bucket) has no leader — a cluster
    // electing a new one after a node died — so it passes like a timeout does; so does
    // 10008 "JetStream system temporarily unavailable", a leader read during an election.
    let transient = ["timed out", "timeout", "broken pipe", "no responders", "disconnected", "no stream found", "temporarily unavailable"];
    if transient.iter().any(|symptom| lower.contains(symptom)) {
        StoreError::Unavailable(text)
    } else {
        StoreError::Internal(text)
    }
}
