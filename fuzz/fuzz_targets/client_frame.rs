//! Fuzzes WebSocket client frame decoding: never a panic, and every accepted frame survives a round trip unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match schemas::parse_client_frame(text) {
        Ok(frame) => {
            let again = serde_json::to_string(&frame).expect("an accepted frame serializes");
            let reparsed = schemas::parse_client_frame(&again).expect("a serialized frame parses again");
            assert_eq!(reparsed, frame);
            if let schemas::ClientFrame::Send { body, .. } = &frame {
                // Validation decides; it must never panic, whatever the body holds.
                let _ = body.validate(64 * 1024);
            }
        }
        Err(error) => assert!(!error.message.is_empty(), "a refusal explains itself"),
    }
});
