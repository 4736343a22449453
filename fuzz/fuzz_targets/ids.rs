//! Fuzzes id validation, the gate between client input and NATS subjects: an accepted id can never widen or split a subject.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(id) = subjects::Id::parse(text) {
        let id = id.as_str();
        assert!(!id.is_empty() && id.len() <= 64);
        assert!(id.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-'), "{id:?}");
        // Every subject built from it has exactly the tokens its template has.
        assert_eq!(subjects::Shard::FIRST.message_subject(&subjects::Id::parse(id).unwrap()).split('.').count(), 2);
    }
});
