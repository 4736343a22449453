//! Validated identifiers: the only values allowed inside a subject token or KV key.

use std::fmt;

/// Longest id we accept; keeps subjects and KV keys short and bounded.
pub const MAX_ID_LEN: usize = 64;

/// An id matching `[A-Za-z0-9_-]{1,64}`: users, devices, conversations, client message ids.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    #[error("id is empty")]
    Empty,
    #[error("id is longer than {MAX_ID_LEN} characters")]
    TooLong,
    #[error("id may contain only A-Z, a-z, 0-9, '_' and '-'")]
    BadCharacter,
}

impl Id {
    pub fn parse(candidate: &str) -> Result<Id, InvalidId> {
        if candidate.is_empty() {
            return Err(InvalidId::Empty);
        }
        if candidate.len() > MAX_ID_LEN {
            return Err(InvalidId::TooLong);
        }
        let allowed = |byte: &u8| byte.is_ascii_alphanumeric() || *byte == b'_' || *byte == b'-';
        if !candidate.as_bytes().iter().all(allowed) {
            return Err(InvalidId::BadCharacter);
        }
        Ok(Id(candidate.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, formatter)
    }
}

impl AsRef<str> for Id {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Id {
    type Err = InvalidId;
    fn from_str(candidate: &str) -> Result<Id, InvalidId> {
        Id::parse(candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<(), InvalidId>) {
        assert_eq!(Id::parse(input).map(|_| ()), expected, "input {input:?}");
    }

    #[test]
    fn accepts_only_the_safe_alphabet() {
        check("alice", Ok(()));
        check("A-b_9", Ok(()));
        check(&"x".repeat(64), Ok(()));
        check("", Err(InvalidId::Empty));
        check(&"x".repeat(65), Err(InvalidId::TooLong));
        check("a.b", Err(InvalidId::BadCharacter));
        check("*", Err(InvalidId::BadCharacter));
        check(">", Err(InvalidId::BadCharacter));
        check("a b", Err(InvalidId::BadCharacter));
        check("é", Err(InvalidId::BadCharacter));
        check("a\u{0}", Err(InvalidId::BadCharacter));
    }
}
