//! Fuzzes the readers of stored records (log envelope, KV records): a corrupt or hostile record is an error, never a panic or a misread version.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(stored) = schemas::decode_stored_message(data) {
        let encoded = schemas::encode_stored_message(&stored);
        assert_eq!(schemas::decode_stored_message(&encoded).expect("what we write we read"), stored);
    }
    let _ = schemas::ConversationRecord::from_bytes(data);
    let _ = schemas::MemberRecord::from_bytes(data);
    let _ = schemas::ClientMsgIdRecord::from_bytes(data);
    let _ = schemas::ReceiptRecord::from_bytes(data);
});
