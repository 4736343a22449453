//! Folding changes: any order and any repetition give the log order's state.

use super::*;
use crate::golden;

fn entry(seq: u64, sender: &str, body: Body) -> Message {
    Message::new("c".into(), seq, format!("m{seq}"), sender.into(), "d".into(), time::macros::datetime!(2026-11-28 10:00 UTC), body, None)
}

fn reaction(seq: u64, sender: &str, emoji: &str, action: ReactionAction) -> (Message, Change) {
    (entry(seq, sender, Body::default()), Change { kind: ChangeKind::Reaction, target_seq: 1, emoji: Some(emoji.into()), action })
}

fn edit(seq: u64, text: &str) -> (Message, Change) {
    (entry(seq, "alice", Body::text(text)), Change { kind: ChangeKind::Edit, target_seq: 1, emoji: None, action: ReactionAction::Add })
}

fn delete(seq: u64, by: &str) -> (Message, Change) {
    (entry(seq, by, Body::default()), Change { kind: ChangeKind::Delete, target_seq: 1, emoji: None, action: ReactionAction::Add })
}

fn fold_all(changes: &[(Message, Change)]) -> MessageStateRecord {
    let mut state = MessageStateRecord::new();
    for (entry, change) in changes {
        state.apply(entry, change);
    }
    state
}

#[test]
fn any_order_and_repetition_folds_to_the_log_order() {
    let log = vec![
        reaction(2, "bob", "👍", ReactionAction::Add),
        edit(3, "first edit"),
        reaction(4, "bob", "👍", ReactionAction::Remove),
        reaction(5, "carol", "👍", ReactionAction::Add),
        edit(6, "second edit"),
        reaction(7, "bob", "🎉", ReactionAction::Add),
    ];
    let in_order = fold_all(&log);
    let mut reversed = log.clone();
    reversed.reverse();
    assert_eq!(fold_all(&reversed), in_order);
    let twice: Vec<_> = log.iter().chain(log.iter()).cloned().collect();
    assert_eq!(fold_all(&twice), in_order);
    assert_eq!(in_order.edit.as_ref().map(|edit| edit.body.text.as_deref()), Some(Some("second edit")));
    assert!(!in_order.has_reaction("👍", "bob") && in_order.has_reaction("👍", "carol") && in_order.has_reaction("🎉", "bob"));
    assert_eq!(in_order.live_emojis(), 2);
}

#[test]
fn two_devices_adding_the_same_reaction_leave_one() {
    let state = fold_all(&[reaction(2, "bob", "👍", ReactionAction::Add), reaction(3, "bob", "👍", ReactionAction::Add)]);
    let message = fold_message(entry(1, "alice", Body::text("hi")), Some((&state, 9)), Some("bob"));
    assert_eq!(message.reactions, vec![ReactionSummary { emoji: "👍".into(), count: 1, me: true }]);
    let seen_by_alice = fold_message(entry(1, "alice", Body::text("hi")), Some((&state, 9)), Some("alice"));
    assert!(!seen_by_alice.reactions[0].me);
}

#[test]
fn the_first_delete_sticks_and_removes_everything_said() {
    let state = fold_all(&[edit(2, "edited"), delete(4, "owner"), delete(3, "alice"), reaction(5, "bob", "👍", ReactionAction::Add)]);
    assert_eq!(state.deleted.as_ref().map(|deleted| (deleted.seq, deleted.by.as_str())), Some((3, "alice")));
    let original = Message { body: Body { text: Some("secret".into()), media_id: Some("m1".into()), ciphertext: None }, ..entry(1, "alice", Body::default()) };
    let tombstone = fold_message(original, Some((&state, 12)), Some("bob"));
    assert!(tombstone.deleted);
    assert_eq!(tombstone.body, Body::default());
    assert!(tombstone.reactions.is_empty() && tombstone.edited_at.is_none());
    assert_eq!((tombstone.deleted_by.as_deref(), tombstone.revision), (Some("alice"), Some(12)));
}

#[test]
fn an_edit_keeps_the_media_and_replaces_the_text() {
    let state = fold_all(&[edit(2, "new caption")]);
    let original = Message { body: Body { text: Some("old".into()), media_id: Some("m1".into()), ciphertext: None }, ..entry(1, "alice", Body::default()) };
    let edited = fold_message(original, Some((&state, 3)), None);
    assert_eq!(edited.body.media_id.as_deref(), Some("m1"));
    assert_eq!(edited.body.text.as_deref(), Some("new caption"));
    assert!(edited.edited_at.is_some());
}

#[test]
fn encrypted_edits_and_reactions_are_not_folded() {
    let mut state = MessageStateRecord::new();
    let encrypted_edit = entry(2, "alice", Body { ciphertext: Some("xyz".into()), ..Body::default() });
    assert!(!state.apply(&encrypted_edit, &Change { kind: ChangeKind::Edit, target_seq: 1, emoji: None, action: ReactionAction::Add }));
    let encrypted_reaction = entry(3, "bob", Body { ciphertext: Some("abc".into()), ..Body::default() });
    assert!(!state.apply(&encrypted_reaction, &Change { kind: ChangeKind::Reaction, target_seq: 1, emoji: None, action: ReactionAction::Add }));
    assert!(state.apply(&entry(4, "alice", Body::default()), &Change { kind: ChangeKind::Delete, target_seq: 1, emoji: None, action: ReactionAction::Add }));
}

#[test]
fn emojis_are_short_and_printable() {
    assert!(validate_emoji("👍").is_ok() && validate_emoji(":party_parrot:").is_ok() && validate_emoji("👩🏽‍💻").is_ok());
    assert!(validate_emoji("").is_err() && validate_emoji("a b").is_err() && validate_emoji("\u{7}").is_err() && validate_emoji(&"x".repeat(65)).is_err());
}

#[test]
fn stored_state_stays_readable() {
    let state = MessageStateRecord::from_bytes(&golden("msgstate.v1.json")).unwrap();
    assert_eq!(state.edit.as_ref().map(|edit| edit.seq), Some(9));
    assert!(state.has_reaction("👍", "carol") && !state.has_reaction("👍", "bob"));
    assert_eq!(MessageStateRecord::from_bytes(&state.to_bytes()).unwrap(), state);
}
