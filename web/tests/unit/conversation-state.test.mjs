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
