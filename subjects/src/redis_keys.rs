//! Every Redis key Natter uses: presence per user, last seen, the presence expiry index, typing windows, rate-limit buckets and spam counts.
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
const RATE_LIMIT_KEY_PREFIX: &str = "natter:rate:";
const SPAM_KEY_PREFIX: &str = "natter:spam:";

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

/// `natter:rate:<action>:user:<user>`: one user's token bucket for one action (a hash: tokens, at).
pub fn rate_limit_user_key(action: &str, user: &Id) -> String {
    format!("{RATE_LIMIT_KEY_PREFIX}{action}:user:{user}")
}

/// `natter:rate:<action>:addr:<address>`: one client address's token bucket for one action.
/// An address is not an id (IPv6 has `:`), but it is the key's last part, so it cannot collide.
pub fn rate_limit_address_key(action: &str, address: &str) -> String {
    format!("{RATE_LIMIT_KEY_PREFIX}{action}:addr:{address}")
}

/// `natter:spam:<user>:<text digest>`: the conversations one text went to within the spam window.
pub fn spam_key(user: &Id, text_digest: &str) -> String {
    format!("{SPAM_KEY_PREFIX}{user}:{text_digest}")
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
        assert_eq!(rate_limit_user_key("send", &id("bob")), "natter:rate:send:user:bob");
        assert_eq!(rate_limit_address_key("connect", "::1"), "natter:rate:connect:addr:::1");
        assert_eq!(spam_key(&id("eve"), "0a1b"), "natter:spam:eve:0a1b");
        assert_ne!(presence_key(&id("presence-expiries")), PRESENCE_EXPIRY_INDEX_KEY);
    }
}
