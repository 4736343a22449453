//! Per-device ordering: which `seq` a device holds per conversation, and what to do with the next delivery.
//!
//! Deliveries arrive at least once and, with several fanout workers, possibly out of order;
//! a device must see each conversation exactly once and in `seq` order.

use std::collections::HashMap;

use subjects::Id;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Already held: drop it.
    Drop,
    /// The next one in order.
    Deliver,
    /// Messages `first_missing..seq` have not been seen: read them from the log first.
    FillGap { first_missing: u64 },
    /// The first delivery of this conversation to this device: nothing to compare against.
    FirstSeen,
}

#[derive(Debug, Default)]
pub struct DeviceCursors {
    held: HashMap<Id, u64>,
}

impl DeviceCursors {
    pub fn decide(&self, conversation: &Id, seq: u64) -> Decision {
        match self.held.get(conversation) {
            None => Decision::FirstSeen,
            Some(&held) if seq <= held => Decision::Drop,
            Some(&held) if seq == held + 1 => Decision::Deliver,
            Some(&held) => Decision::FillGap { first_missing: held + 1 },
        }
    }

    /// Records that the device now holds everything up to `seq`; never moves backwards.
    pub fn advance(&mut self, conversation: &Id, seq: u64) {
        let held = self.held.entry(conversation.clone()).or_insert(0);
        *held = (*held).max(seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_follow_the_cursor() {
        let conversation = Id::parse("c").unwrap();
        let mut cursors = DeviceCursors::default();
        let check = |cursors: &DeviceCursors, seq, expected| assert_eq!(cursors.decide(&conversation, seq), expected, "seq {seq}");
        check(&cursors, 5, Decision::FirstSeen);
        cursors.advance(&conversation, 5);
        check(&cursors, 5, Decision::Drop);
        check(&cursors, 4, Decision::Drop);
        check(&cursors, 6, Decision::Deliver);
        check(&cursors, 9, Decision::FillGap { first_missing: 6 });
        cursors.advance(&conversation, 3);
        check(&cursors, 6, Decision::Deliver);
    }
}
