//! Virus scan over clamd's INSTREAM, with a timeout and clamd's size-limit error told apart from an infection.

use std::time::Duration;

use bytes::Bytes;
use clamav_client::tokio::Tcp;
use futures::Stream;

/// 64 KiB chunks: clamav-client's default 4 KiB is about twice as slow.
pub const SCAN_CHUNK_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    /// clamd found a signature; the name says which.
    Infected(String),
    /// clamd refused the stream as longer than its StreamMaxLength: not scanned, so not servable.
    TooLargeToScan,
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("clamd did not answer within {0:?}")]
    Timeout(Duration),
    #[error("clamd connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("clamd answered {0:?}")]
    Unexpected(String),
}

/// Where clamd listens and how long one scan may take.
#[derive(Debug, Clone)]
pub struct Scanner {
    pub address: String,
    pub timeout: Duration,
}

impl Scanner {
    pub async fn scan_bytes(&self, content: &[u8]) -> Result<Verdict, ScanError> {
        let connection = Tcp { host_address: self.address.as_str() };
        let scan = clamav_client::tokio::scan_buffer(content, connection, Some(SCAN_CHUNK_BYTES));
        let reply = tokio::time::timeout(self.timeout, scan).await.map_err(|_| ScanError::Timeout(self.timeout))??;
        parse_reply(&reply)
    }

    pub async fn scan_stream(&self, content: impl Stream<Item = std::io::Result<Bytes>>) -> Result<Verdict, ScanError> {
        let connection = Tcp { host_address: self.address.as_str() };
        let scan = clamav_client::tokio::scan_stream(content, connection, Some(SCAN_CHUNK_BYTES));
        let reply = tokio::time::timeout(self.timeout, scan).await.map_err(|_| ScanError::Timeout(self.timeout))??;
        parse_reply(&reply)
    }
}

/// Reads `stream: OK`, `stream: <name> FOUND` and `INSTREAM size limit exceeded. ERROR`.
fn parse_reply(reply: &[u8]) -> Result<Verdict, ScanError> {
    let text = String::from_utf8_lossy(reply);
    let text = text.trim_end_matches(['\0', '\n', ' ']);
    let body = text.strip_prefix("stream: ").unwrap_or(text);
    if body == "OK" {
        Ok(Verdict::Clean)
    } else if let Some(name) = body.strip_suffix(" FOUND") {
        Ok(Verdict::Infected(name.to_owned()))
    } else if body.contains("size limit exceeded") {
        Ok(Verdict::TooLargeToScan)
    } else {
        Err(ScanError::Unexpected(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(reply: &str, expected: Option<Verdict>) {
        assert_eq!(parse_reply(reply.as_bytes()).ok(), expected, "reply {reply:?}");
    }

    #[test]
    fn clamd_replies() {
        check("stream: OK\0", Some(Verdict::Clean));
        check("stream: Natter.Test.EICAR.UNOFFICIAL FOUND\0", Some(Verdict::Infected("Natter.Test.EICAR.UNOFFICIAL".to_owned())));
        check("INSTREAM size limit exceeded. ERROR\0", Some(Verdict::TooLargeToScan));
        check("stream: Can't allocate memory ERROR\0", None);
    }
}
