//! Every Redis key Natter uses: presence per user, last seen, the presence expiry index and typing rate limits.
//!
//! Ids cannot contain `:` (see [`Id::parse`]), so a key built from ids can never collide with another kind of key.

use crate::Id;

/// Prefix of a user's presence set: a sorted set of `<gateway instance>:<connection>` scored by expiry (unix ms).
pub const PRESENCE_KEY_PREFIX: &str = "natter:presence:";
/// Prefix of a user's last-seen time (unix ms), written when their last device goes.
pub const LAST_SEEN_KEY_PREFIX: &str = "natter:last_seen:";
/// Sorted set of users scored by their newest device's expiry, so any gateway can find users whose
/// devices all expired (a crashed gateway's) and announce them offline. The `-` keeps it apart from
/// [`PRESENCE_KEY_PREFIX`] keys, whose third part is a user id.
pub const PRESENCE_EXPIRY_INDEX_KEY: &str = "natter:presence-expiries";
const TYPING_KEY_PREFIX: &str = "natter:typing:";

/// `natter:presence:<user>`.
pub fn presence_key(user: &Id) -> String {
    format!("{PRESENCE_KEY_PREFIX}{user}")
}

/// `natter:last_seen:<user>`.
pub fn last_seen_key(user: &Id) -> String {
    format!("{LAST_SEEN_KEY_PREFIX}{user}")
}

/// `<gateway instance>:<connection>`: one member of a presence set, naming one device connection.
pub fn presence_member(gateway_instance: &str, connection: u64) -> String {
    format!("{gateway_instance}:{connection}")
}

/// `natter:typing:<conv>:<user>`: set with NX and an expiry, so one typing event per window is forwarded.
pub fn typing_key(conversation: &Id, user: &Id) -> String {
    format!("{TYPING_KEY_PREFIX}{conversation}:{user}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> Id {
        Id::parse(text).expect("test ids are valid")
    }

    #[test]
    fn keys_are_spelled_as_documented() {
        assert_eq!(presence_key(&id("alice")), "natter:presence:alice");
        assert_eq!(last_seen_key(&id("alice")), "natter:last_seen:alice");
        assert_eq!(presence_member("01HX", 7), "01HX:7");
        assert_eq!(typing_key(&id("g-1"), &id("bob")), "natter:typing:g-1:bob");
        assert_ne!(presence_key(&id("presence-expiries")), PRESENCE_EXPIRY_INDEX_KEY);
    }
}
