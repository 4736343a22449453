//! Mentions on send: `@<id>` tokens found in a readable text, or the list a client names for a ciphertext body, narrowed to the conversation's other members.

use std::collections::HashSet;

use schemas::Body;
use store::MemberSet;
use subjects::Id;

use crate::api_error::ApiError;

/// Most members one message mentions; beyond it a message is a broadcast, and the cap keeps the
/// keys written before the ack (one per mention) bounded.
pub const MAX_MENTIONS: usize = 50;
const MAX_ID_LEN: usize = 64;

fn is_id_char(character: char) -> bool {
    character.is_ascii_alphanumeric() || character == '_' || character == '-'
}

/// Every `@<id>` in `text`, in order: the `@` starts the text or follows a character that cannot
/// be part of an id (so `x@bob.com` mentions nobody), and the id is the whole run of id characters
/// after it (`@bob,` is bob; a run longer than an id is no mention at all).
pub fn mention_tokens(text: &str) -> Vec<&str> {
    let mut tokens = Vec::new();
    let mut previous: Option<char> = None;
    for (at, character) in text.char_indices() {
        let starts_token = character == '@' && !previous.is_some_and(is_id_char);
        previous = Some(character);
        if !starts_token {
            continue;
        }
        let rest = &text[at + 1..];
        let length = rest.find(|character: char| !is_id_char(character)).unwrap_or(rest.len());
        if (1..=MAX_ID_LEN).contains(&length) {
            tokens.push(&rest[..length]);
        }
    }
    tokens
}

/// The message's mentions: members other than the sender, each once, in first-seen order, at most [`MAX_MENTIONS`].
pub fn mentioned_members<'a>(candidates: impl IntoIterator<Item = &'a str>, members: &MemberSet, sender: &Id) -> Vec<Id> {
    let mut seen = HashSet::new();
    let mut mentioned = Vec::new();
    for candidate in candidates {
        let Ok(user) = Id::parse(candidate) else { continue };
        if user == *sender || !members.contains_key(&user) || !seen.insert(user.clone()) {
            continue;
        }
        mentioned.push(user);
        if mentioned.len() == MAX_MENTIONS {
            break;
        }
    }
    mentioned
}

/// What a send mentions. A readable text is parsed here and a client list refused (`invalid`): one
/// source of truth. A ciphertext body cannot be read, so its sender may name the mentions (valid ids,
/// at most [`MAX_MENTIONS`]); they are narrowed the same way, so a client can only reach members.
pub fn mentions_of_send(body: &Body, client_mentions: Option<&[String]>, members: &MemberSet, sender: &Id) -> Result<Vec<Id>, ApiError> {
    match (&body.ciphertext, client_mentions) {
        (Some(_), None) => Ok(Vec::new()),
        (Some(_), Some(named)) => {
            if named.len() > MAX_MENTIONS {
                return Err(ApiError::invalid(format!("mentions names {} users; at most {MAX_MENTIONS}", named.len())));
            }
            if let Some(bad) = named.iter().find(|user| Id::parse(user).is_err()) {
                return Err(ApiError::invalid(format!("mentions: {bad:?} is not a user id")));
            }
            Ok(mentioned_members(named.iter().map(String::as_str), members, sender))
        }
        (None, Some(_)) => Err(ApiError::invalid("mentions may be named only for a ciphertext body; a text's @mentions are found by the server")),
        (None, None) => Ok(body.text.as_deref().map(|text| mentioned_members(mention_tokens(text), members, sender)).unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: &[&str]) {
        assert_eq!(mention_tokens(text), expected, "text {text:?}");
    }

    #[test]
    fn tokens() {
        check("@bob hi", &["bob"]);
        check("hi @bob", &["bob"]);
        check("hi @bob, @carol. (@dave) @erin!", &["bob", "carol", "dave", "erin"]);
        check("x@bob.com", &[]);
        check("mail bob@example.com please", &[]);
        check("@", &[]);
        check("@ bob", &[]);
        check("@@bob", &["bob"]);
        check("@bob@carol", &["bob"]);
        check("@b-o_b9", &["b-o_b9"]);
        check("é@bob", &["bob"]);
        check("@bob\n@bob", &["bob", "bob"]);
        check("@bóris", &["b"]);
        check(&format!("@{}", "a".repeat(64)), &[&"a".repeat(64)]);
        check(&format!("@{} @bob", "a".repeat(65)), &["bob"]);
    }

    fn members(users: &[&str]) -> MemberSet {
        users.iter().map(|user| (Id::parse(user).unwrap(), schemas::Role::Member)).collect()
    }

    fn ids(users: &[Id]) -> Vec<&str> {
        users.iter().map(Id::as_str).collect()
    }

    #[test]
    fn only_other_members_once_in_order_and_capped() {
        let group = members(&["alice", "bob", "carol"]);
        let alice = Id::parse("alice").unwrap();
        let found = mentioned_members(mention_tokens("@carol @mallory @alice @bob @carol"), &group, &alice);
        assert_eq!(ids(&found), ["carol", "bob"]);
        let many: Vec<String> = (0..60).map(|index| format!("u{index}")).collect();
        let crowd = members(&many.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(mentioned_members(many.iter().map(String::as_str), &crowd, &alice).len(), MAX_MENTIONS);
    }

    #[test]
    fn client_lists_only_for_ciphertext() {
        let group = members(&["alice", "bob"]);
        let alice = Id::parse("alice").unwrap();
        let sealed = Body { ciphertext: Some("c2VjcmV0".to_owned()), ..Body::default() };
        let named = ["bob".to_owned(), "mallory".to_owned(), "bob".to_owned(), "alice".to_owned()];
        assert_eq!(ids(&mentions_of_send(&sealed, Some(&named), &group, &alice).unwrap()), ["bob"]);
        assert!(mentions_of_send(&sealed, None, &group, &alice).unwrap().is_empty());
        assert!(mentions_of_send(&sealed, Some(&["bad id".to_owned()]), &group, &alice).is_err());
        assert!(mentions_of_send(&sealed, Some(&vec!["bob".to_owned(); MAX_MENTIONS + 1]), &group, &alice).is_err());
        assert!(mentions_of_send(&Body::text("@bob"), Some(&["bob".to_owned()]), &group, &alice).is_err());
        assert_eq!(ids(&mentions_of_send(&Body::text("@bob"), None, &group, &alice).unwrap()), ["bob"]);
        let caption = Body { media_id: Some("m1".to_owned()), text: Some("for @bob".to_owned()), ..Body::default() };
        assert_eq!(ids(&mentions_of_send(&caption, None, &group, &alice).unwrap()), ["bob"]);
    }
}
