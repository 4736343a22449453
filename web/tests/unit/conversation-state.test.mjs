// Unit tests of the client library's per-conversation state: the contiguous window, dedupe by seq, gaps, older pages, optimistic sends and delivery states.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Added, ConversationState } from '../../client/conversation-state.js';

const message = (seq, sender = 'bob', clientMsgId = `m${seq}`) => ({
  conversation_id: 'c1', seq, client_msg_id: clientMsgId, sender, sender_device: 'd', sent_at: '2026-01-01T00:00:00Z', body: { text: `text ${seq}` },
});

const seqsOf = (state) => state.timeline().map((item) => (item.kind === 'message' ? item.message.seq : `pending:${item.pending.client_msg_id}`));

test('messages are held once each, and a jump past the newest is reported as a gap', () => {
  const state = new ConversationState('c1', 'alice');
  const check = (seq, expected) => assert.equal(state.addMessage(message(seq)), expected, `seq ${seq}`);
  check(1, Added.ADDED);
  check(2, Added.ADDED);
  check(2, Added.DUPLICATE);
  check(1, Added.DUPLICATE);
  check(4, Added.GAP);
  check(3, Added.ADDED);
  check(4, Added.ADDED);
  assert.deepEqual(seqsOf(state), [1, 2, 3, 4]);
  assert.equal(state.newestSeq, 4);
});

test('an empty window accounted up to a seq (from the inbox) ignores what it covers and starts at the next', () => {
  const state = new ConversationState('c1', 'alice');
  state.newestSeq = 10;
  assert.equal(state.addMessage(message(9)), Added.DUPLICATE);
  assert.equal(state.addMessage(message(11)), Added.ADDED);
  assert.equal(state.oldestSeq, 11);
  assert.equal(state.hasMoreBefore, true);
  state.addOlderPage([message(8), message(9), message(10), message(11)], true);
  assert.deepEqual(seqsOf(state), [8, 9, 10, 11]);
  state.addOlderPage([message(1), message(2), message(3), message(4), message(5), message(6), message(7)], false);
  assert.deepEqual(seqsOf(state), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
  assert.equal(state.hasMoreBefore, false);
});

test('the latest page defines an empty window, even when the inbox named a later seq', () => {
  const state = new ConversationState('c1', 'alice');
  state.newestSeq = 6;
  state.addOlderPage([message(3), message(4), message(5)], true);
  assert.deepEqual(seqsOf(state), [3, 4, 5]);
  assert.equal(state.newestSeq, 5, 'the cursor follows the window, so seq 6 is fetched again, not skipped');
  assert.equal(state.addMessage(message(7)), Added.GAP);
});

test('my send is pending until the log has it; the ack gives it a seq; receipts move it to delivered and read', () => {
  const state = new ConversationState('c1', 'alice');
  state.members = ['alice', 'bob', 'carol'];
  state.addMessage(message(1));
  state.addPending('mine-1', { text: 'hello' });
  const pendingItem = () => state.timeline().find((item) => item.kind === 'pending');
  assert.equal(state.deliveryState(pendingItem()), 'sending');
  state.acknowledge('mine-1', 2);
  assert.equal(state.deliveryState(pendingItem()), 'sent');
  state.addMessage(message(2, 'alice', 'mine-1'));
  assert.deepEqual(seqsOf(state), [1, 2], 'the pending send became the logged message');
  const mine = state.timeline()[1];
  assert.equal(state.deliveryState(mine), 'sent');
  state.noteReceipt('bob', 'delivered', 2);
  assert.equal(state.deliveryState(mine), 'sent', 'carol has not got it yet');
  state.noteReceipt('carol', 'delivered', 5);
  assert.equal(state.deliveryState(mine), 'delivered');
  state.noteReceipt('bob', 'read', 2);
  assert.equal(state.deliveryState(mine), 'delivered', 'carol has not read it');
  state.addMessage(message(3, 'carol'));
  assert.equal(state.deliveryState(mine), 'read', 'sending moves the sender\'s read watermark');
  state.noteReceipt('bob', 'read', 1);
  assert.equal(state.readWatermarks.get('bob'), 2, 'watermarks never go back');
  assert.equal(state.deliveryState(state.timeline()[0]), null, 'other people\'s messages have no delivery state');
});

test('a failed send keeps its place and its error until retried', () => {
  const state = new ConversationState('c1', 'alice');
  state.addPending('mine-1', { text: 'too big' });
  state.failPending('mine-1', 'body is too large');
  const item = state.timeline()[0];
  assert.equal(state.deliveryState(item), 'failed');
  assert.equal(item.pending.error, 'body is too large');
});

test('unread after a read elsewhere counts only other people\'s messages past it', () => {
  const state = new ConversationState('c1', 'alice');
  for (const [seq, sender] of [[1, 'bob'], [2, 'alice'], [3, 'bob'], [4, 'bob']]) state.addMessage(message(seq, sender));
  assert.equal(state.countFromOthersAfter(1), 2);
  assert.equal(state.countFromOthersAfter(4), 0);
});

/** An edit, delete or reaction entry `seq` changing message `target`. */
const change = (seq, target, kind = 'reaction', sender = 'bob') => ({
  conversation_id: 'c1', seq, kind, target_seq: target, client_msg_id: `u${seq}`, sender, sender_device: 'd', sent_at: '2026-01-01T00:00:01Z',
});
const view = (seq, revision, extra = {}) => ({ ...message(seq), revision, ...extra });

test('changes take their own seqs in order: the next message after one is no gap, a jump past one is', () => {
  const state = new ConversationState('c1', 'alice');
  state.addMessage(message(1));
  assert.equal(state.addUpdate(change(2, 1), view(1, 5, { reactions: [{ emoji: '👍', count: 1, me: false }] })), Added.ADDED);
  assert.equal(state.newestSeq, 2);
  assert.deepEqual(state.messages.get(1).reactions, [{ emoji: '👍', count: 1, me: false }], 'the target shows its new state');
  assert.equal(state.addMessage(message(3)), Added.ADDED, 'seq 2 was a change, accounted for: 3 is next');
  assert.equal(state.addUpdate(change(5, 3), view(3, 9)), Added.GAP, 'seq 4 is unaccounted');
  assert.equal(state.messages.get(3).revision, undefined, 'a change past a gap waits for the gap to be filled');
  assert.equal(state.addMessage(message(6)), Added.GAP);
  assert.equal(state.addUpdate(change(2, 1), view(1, 5)), Added.DUPLICATE, 'a change seen again changes nothing');
  assert.deepEqual(seqsOf(state), [1, 3]);
});

test('the view with the highest revision wins, in whatever order frames bring them', () => {
  const state = new ConversationState('c1', 'alice');
  state.addMessage(message(1, 'alice'));
  const edited = view(1, 7, { body: { text: 'edited' }, edited_at: '2026-01-01T00:01:00Z' });
  const deleted = view(1, 8, { body: {}, deleted: true, deleted_at: '2026-01-01T00:02:00Z', deleted_by: 'alice' });
  // A sync may resend an old change carrying the message as it stands now, and a live frame may lag behind it.
  assert.equal(state.addUpdate(change(2, 1, 'delete', 'alice'), deleted), Added.ADDED);
  assert.equal(state.addUpdate(change(3, 1, 'edit', 'alice'), edited), Added.ADDED, 'its seq is still accounted for');
  assert.equal(state.messages.get(1).deleted, true, 'an older revision never undoes a newer one');
  assert.equal(state.lastMessage.deleted, true, 'the last message shows the tombstone too');
  assert.equal(state.addMessage(view(1, 8)), Added.DUPLICATE, 'the same revision again changes nothing');
  assert.equal(state.addMessage({ ...deleted, revision: 9, reactions: [] }), Added.REFRESHED, 'a resent message with a newer state replaces the held one');
  assert.equal(state.messages.get(1).revision, 9);
  assert.equal(state.newestSeq, 3);
});

test('a change is not a new message: the last message stays, and only its state follows the change', () => {
  const state = new ConversationState('c1', 'alice');
  state.addMessage(message(1));
  state.addMessage(message(2));
  state.addUpdate(change(3, 1, 'edit'), view(1, 4, { body: { text: 'new text' } }));
  assert.equal(state.lastMessage.seq, 2);
  state.addUpdate(change(4, 2, 'delete'), view(2, 5, { body: {}, deleted: true }));
  assert.equal(state.lastMessage.seq, 2);
  assert.equal(state.lastMessage.deleted, true);
  assert.equal(state.addUpdate(change(5, 2, 'reaction'), undefined), Added.ADDED, 'a change whose message expired still takes its seq');
  assert.equal(state.newestSeq, 5);
});

test('with nothing held, a change moves the cursor and refreshes the inbox\'s last message', () => {
  const state = new ConversationState('c1', 'alice');
  state.applyInboxEntry({ id: 'c1', kind: 'direct', title: null, last_message: message(4), unread: 0 }, false, 100);
  assert.equal(state.newestSeq, 4);
  assert.equal(state.addUpdate(change(6, 4, 'edit'), view(4, 3, { body: { text: 'fixed' } })), Added.ADDED, 'nothing held: no gap check');
  assert.equal(state.newestSeq, 6);
  assert.equal(state.loaded, false);
  assert.equal(state.lastMessage.body.text, 'fixed');
});

test('older pages have holes where changes are: paging goes on past them', () => {
  const state = new ConversationState('c1', 'alice');
  // The latest page: 9 and 10 were changes, so the newest message is 8; seqs 5 and 7 are changes too.
  state.addOlderPage([message(4), message(6), message(8)], true);
  assert.deepEqual(seqsOf(state), [4, 6, 8]);
  assert.equal(state.oldestSeq, 4);
  assert.equal(state.newestSeq, 8);
  assert.equal(state.hasMoreBefore, true);
  assert.equal(state.addOlderPage([message(1), message(3)], true), 2, 'a page below the window is taken whole, hole at 2 and all');
  assert.equal(state.oldestSeq, 1);
  assert.equal(state.hasMoreBefore, false, 'nothing is older than seq 1');
  assert.deepEqual(seqsOf(state), [1, 3, 4, 6, 8]);
  assert.equal(state.addMessage(message(9)), Added.ADDED);
});

test('an older page that brings no message leaves the window as it was (the caller may ask wider)', () => {
  const state = new ConversationState('c1', 'alice');
  state.addMessage(message(40));
  assert.equal(state.addOlderPage([], true), 0);
  assert.equal(state.oldestSeq, 40);
  assert.equal(state.hasMoreBefore, true);
  assert.equal(state.addOlderPage([message(40, 'bob')], false), 0, 'messages the window holds are not older');
  assert.equal(state.hasMoreBefore, false);
});

test('a gap-filling page may start after a hole and run past the live seq; a last page accounts for the rest', () => {
  const state = new ConversationState('c1', 'alice');
  state.addMessage(message(1));
  // Live: seq 10 arrives, 2..9 unaccounted. The page after 1 skips 2 (a change) and, reading past changes, returns 12.
  const added = state.addNewerPage([message(3), message(5), message(12)], true, 10);
  assert.deepEqual(added.map((item) => item.seq), [3, 5, 12]);
  assert.equal(state.newestSeq, 12, 'everything up to the page\'s highest message is accounted for');
  assert.equal(state.lastMessage.seq, 12);

  const other = new ConversationState('c1', 'alice');
  other.addMessage(message(1));
  assert.deepEqual(other.addNewerPage([message(3)], false, 8).map((item) => item.seq), [3]);
  assert.equal(other.newestSeq, 7, 'no more messages: 4..7 are changes, and the live entry 8 is next');
  assert.equal(other.addMessage(message(8)), Added.ADDED);
  assert.deepEqual(other.addNewerPage([], false, 10), [], 'an empty last page');
  assert.equal(other.newestSeq, 9);
});

test('a change seen before its message pages in is not undone by a page read before the change', () => {
  const state = new ConversationState('c1', 'alice');
  state.addMessage(message(20));
  // The page before 20 is on its way when a reaction to message 12 arrives; the page was read before it.
  assert.equal(state.addUpdate(change(21, 12), view(12, 30, { reactions: [{ emoji: '👍', count: 1, me: false }] })), Added.ADDED);
  state.addOlderPage([message(10), view(12, 25)], false);
  assert.equal(state.messages.get(12).revision, 30);
  assert.deepEqual(state.messages.get(12).reactions, [{ emoji: '👍', count: 1, me: false }]);
  assert.equal(state.viewsNotHeld.size, 0, 'a remembered view is forgotten once its message is held');

  // An empty window: the latest page arrives after a change the sync brought.
  const fresh = new ConversationState('c1', 'alice');
  fresh.newestSeq = 5;
  fresh.addUpdate(change(6, 5, 'delete'), view(5, 40, { body: {}, deleted: true }));
  fresh.addOlderPage([message(4), view(5, 33)], true);
  assert.equal(fresh.messages.get(5).deleted, true);
  assert.equal(fresh.lastMessage.deleted, true);
});
