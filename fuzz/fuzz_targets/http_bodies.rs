//! Fuzzes the JSON bodies of the HTTP API as the gateway reads them: never a panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<schemas::CreateConversationRequest>(data);
    let _ = serde_json::from_slice::<schemas::AddMemberRequest>(data);
    if let Ok(request) = serde_json::from_slice::<schemas::PostMessageRequest>(data) {
        let _ = request.body.validate(64 * 1024);
    }
    let _ = serde_json::from_slice::<schemas::ReceiptRequest>(data);
    let _ = serde_json::from_slice::<schemas::CreateMediaRequest>(data);
    let _ = serde_json::from_slice::<schemas::DevTokenRequest>(data);
    let _ = serde_json::from_slice::<schemas::TokenClaims>(data);
});
