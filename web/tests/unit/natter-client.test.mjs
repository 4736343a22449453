// Unit tests of NatterClient against a scripted gateway (fake WebSocket and fetch): resume and sync cursors, dedupe, resends after a drop, gap fill, receipts, backoff.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Connection, NatterClient } from '../../client/natter-client.js';

const token = `x.${Buffer.from(JSON.stringify({ sub: 'alice' })).toString('base64url')}.sig`;
const message = (seq, sender = 'bob', clientMsgId = `m${seq}`) => ({
  conversation_id: 'c1', seq, client_msg_id: clientMsgId, sender, sender_device: 'd', sent_at: '2026-01-01T00:00:00Z', body: { text: `text ${seq}` },
});

/** A WebSocket the test plays the server for. */
class FakeSocket extends EventTarget {
  static all = [];
  constructor(url) {
    super();
    this.url = new URL(url);
    this.sent = [];
    FakeSocket.all.push(this);
  }
  send(data) {
    this.sent.push(JSON.parse(data));
  }
  close(code = 1000, reason = '') {
    this.dispatchEvent(Object.assign(new Event('close'), { code, reason }));
  }
  accept() {
    this.dispatchEvent(new Event('open'));
  }
  receive(frame) {
    this.dispatchEvent(new MessageEvent('message', { data: JSON.stringify(frame) }));
  }
}

/** Polls until `condition` holds (the client works through timers and promises), failing after a deadline. */
async function until(what, condition, timeoutMs = 2000) {
  const giveUpAt = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > giveUpAt) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

function scriptedFetch(routes, requests) {
  return async (url, init = {}) => {
    const { pathname, search } = new URL(url);
    requests.push(`${init.method ?? 'GET'} ${pathname}${search}`);
    const body = routes(`${init.method ?? 'GET'} ${pathname}${search}`);
    if (body === undefined) return new Response(JSON.stringify({ error: { code: 'not_found', message: 'no route' } }), { status: 404 });
    return new Response(JSON.stringify(body), { status: 200, headers: { 'content-type': 'application/json' } });
  };
}

test('resume, sync from before the unread, dedupe, resend after a drop, gap fill and receipts', async () => {
  FakeSocket.all = [];
  const requests = [];
  const routes = (request) => {
    if (request === 'GET /v1/conversations') return { conversations: [{ id: 'c1', kind: 'direct', title: null, last_message: message(5), unread: 2 }] };
    if (request === 'GET /v1/conversations/c1') return { id: 'c1', kind: 'direct', title: null, members: [{ user: 'alice', role: 'member' }, { user: 'bob', role: 'member' }], created_at: '2026-01-01T00:00:00Z' };
    if (request === 'GET /v1/conversations/c1/messages?after=6&limit=1') return { messages: [message(7)], has_more: false };
    return undefined;
  };
  const client = new NatterClient({
    baseUrl: 'http://gateway.test', token, deviceId: 'laptop', WebSocket: FakeSocket, fetch: scriptedFetch(routes, requests), backoff: { initialMs: 1, maxMs: 4 },
  });
  await client.start();
  const first = FakeSocket.all[0];
  assert.equal(first.url.pathname, '/v1/ws');
  assert.deepEqual(Object.fromEntries(first.url.searchParams), { token, device: 'laptop', resume: '1' });

  first.accept();
  const sync = first.sent[0];
  assert.equal(sync.type, 'sync');
  assert.deepEqual(sync.cursors, { c1: 3 }, 'the two unread messages come through the sync');
  for (const frame of [message(4), message(5), message(5)]) first.receive({ type: 'message', message: frame });
  first.receive({ type: 'synced', id: sync.id, cursors: { c1: 5 } });
  await until('synced', () => client.connectionState === 'online');
  const state = client.conversation('c1');
  assert.deepEqual([...state.messages.keys()], [4, 5]);
  assert.equal(state.unread, 2, 'messages the inbox counted are not counted again');

  const clientMsgId = client.sendText('c1', 'hi');
  const sendFrame = first.sent.find((frame) => frame.type === 'send');
  assert.equal(sendFrame.client_msg_id, clientMsgId);
  first.close(1001, 'server shutting down; reconnect');
  assert.equal(client.connectionState, 'offline');

  await until('a second socket', () => FakeSocket.all.length === 2);
  const second = FakeSocket.all[1];
  second.accept();
  const resync = second.sent[0];
  assert.deepEqual(resync.cursors, { c1: 5 });
  second.receive({ type: 'synced', id: resync.id, cursors: { c1: 5 } });
  await until('the unacked send goes again', () => second.sent.some((frame) => frame.type === 'send'));
  const resend = second.sent.find((frame) => frame.type === 'send');
  assert.equal(resend.client_msg_id, clientMsgId, 'the same client_msg_id, so the server stores it once');

  second.receive({ type: 'ack', id: resend.id, conversation_id: 'c1', client_msg_id: clientMsgId, seq: 6, sent_at: '2026-01-01T00:00:01Z', duplicate: true });
  second.receive({ type: 'message', message: message(6, 'alice', clientMsgId) });
  second.receive({ type: 'message', message: message(8) });
  await until('the gap is filled', () => state.newestSeq === 8);
  assert.deepEqual([...state.messages.keys()], [4, 5, 6, 7, 8]);
  assert.equal(state.pending.size, 0);
  assert.ok(requests.includes('GET /v1/conversations/c1/messages?after=6&limit=1'));

  const mine = state.timeline().find((item) => item.kind === 'message' && item.message.seq === 6);
  assert.equal(state.deliveryState(mine), 'read', 'bob sent seq 7 and 8 after it, which moved his read watermark');
  client.stop();
});

test('backoff grows exponentially with full jitter up to its ceiling, and resets once healthy', () => {
  const connection = new Connection({ wsUrl: 'ws://gateway.test/v1/ws', token, deviceId: 'd', backoff: { initialMs: 100, maxMs: 1000 }, random: () => 1 });
  const ceilings = [];
  for (let attempt = 0; attempt < 6; attempt += 1) {
    ceilings.push(connection.nextDelayMs());
    connection.failedAttempts += 1;
  }
  assert.deepEqual(ceilings, [100, 200, 400, 800, 1000, 1000]);
  connection.markHealthy();
  assert.equal(connection.nextDelayMs(), 100);
  const jittered = new Connection({ wsUrl: 'ws://gateway.test/v1/ws', token, deviceId: 'd', backoff: { initialMs: 100, maxMs: 1000 }, random: () => 0.25 });
  assert.equal(jittered.nextDelayMs(), 25);
});

test('a socket that goes silent is closed after two ping intervals and replaced', async () => {
  FakeSocket.all = [];
  const connection = new Connection({ wsUrl: 'ws://gateway.test/v1/ws', token, deviceId: 'd', WebSocket: FakeSocket, backoff: { initialMs: 1, maxMs: 1 }, pingIntervalMs: 5 });
  const states = [];
  connection.addEventListener('state', (event) => states.push(event.detail.state));
  connection.start();
  FakeSocket.all[0].accept();
  await until('a ping went out', () => FakeSocket.all[0].sent.some((frame) => frame.type === 'ping'));
  await until('a new socket replaces the silent one', () => FakeSocket.all.length === 2);
  assert.deepEqual(states.slice(0, 4), ['connecting', 'open', 'waiting', 'connecting']);
  connection.stop();
});

test('a sync refused for a conversation we left drops it and syncs again without it', async () => {
  FakeSocket.all = [];
  let inboxReads = 0;
  const routes = (request) => {
    if (request === 'GET /v1/conversations') {
      inboxReads += 1;
      const left = { id: 'left', kind: 'group', title: 'old', last_message: null, unread: 0 };
      const kept = { id: 'kept', kind: 'group', title: 'new', last_message: null, unread: 0 };
      return { conversations: inboxReads === 1 ? [kept, left] : [kept] };
    }
    if (request.startsWith('GET /v1/conversations/')) {
      const id = request.split('/').pop();
      return { id, kind: 'group', title: id, members: [{ user: 'alice', role: 'owner' }], created_at: '2026-01-01T00:00:00Z' };
    }
    return undefined;
  };
  const client = new NatterClient({ baseUrl: 'http://gateway.test', token, deviceId: 'laptop', WebSocket: FakeSocket, fetch: scriptedFetch(routes, []) });
  await client.start();
  const socket = FakeSocket.all[0];
  socket.accept();
  assert.deepEqual(socket.sent[0].cursors, { kept: 0, left: 0 });
  socket.receive({ type: 'error', id: socket.sent[0].id, code: 'forbidden', message: 'not a member of left' });
  await until('a second sync', () => socket.sent.filter((frame) => frame.type === 'sync').length === 2);
  assert.deepEqual(socket.sent[1].cursors, { kept: 0 });
  assert.equal(client.conversation('left'), undefined);
  client.stop();
});

const update = (seq, target, kind, sender = 'bob', extra = {}) => ({
  conversation_id: 'c1', seq, kind, target_seq: target, client_msg_id: `u${seq}`, sender, sender_device: 'd', sent_at: '2026-01-01T00:00:02Z', ...extra,
});
const members = { id: 'c1', kind: 'direct', title: null, members: [{ user: 'alice', role: 'member' }, { user: 'bob', role: 'member' }], created_at: '2026-01-01T00:00:00Z' };

/** A client signed in as alice whose inbox lists c1 with `lastMessage`, synced on its first socket. */
async function syncedClient(routes, requests, { lastMessage = message(2), unread = 0 } = {}) {
  FakeSocket.all = [];
  const client = new NatterClient({
    baseUrl: 'http://gateway.test', token, deviceId: 'laptop', WebSocket: FakeSocket, backoff: { initialMs: 1, maxMs: 2 },
    fetch: scriptedFetch((request) => {
      if (request === 'GET /v1/conversations') return { conversations: [{ id: 'c1', kind: 'direct', title: null, last_message: lastMessage, unread }] };
      if (request === 'GET /v1/conversations/c1') return members;
      return routes(request);
    }, requests),
  });
  await client.start();
  const socket = FakeSocket.all[0];
  socket.accept();
  return { client, socket, sync: socket.sent[0] };
}

test('message_updated: in seq order with messages, gaps filled through holes, newest revision shown, no unread', async () => {
  const requests = [];
  const { client, socket, sync } = await syncedClient((request) => {
    // Seqs 6 and 7 are changes: the page after 5 skips them and, reading past them, also returns 8.
    if (request === 'GET /v1/conversations/c1/messages?after=5&limit=3') return { messages: [message(8)], has_more: false };
    return undefined;
  }, requests);
  assert.deepEqual(sync.cursors, { c1: 2 });
  socket.receive({ type: 'synced', id: sync.id, cursors: { c1: 2 } });
  // After `synced` the inbox is read again (it sets the unread count): live frames come after that here.
  await until('the inbox is read again', () => requests.filter((request) => request === 'GET /v1/conversations').length === 2);
  await until('synced', () => client.connectionState === 'online');
  for (const seq of [3, 4]) socket.receive({ type: 'message', message: message(seq) });
  const edited = { ...message(3), body: { text: 'text 3, fixed' }, edited_at: '2026-01-01T00:00:02Z', revision: 11 };
  socket.receive({ type: 'message_updated', update: update(5, 3, 'edit', 'bob', { body: { text: 'text 3, fixed' } }), message: edited });
  const state = client.conversation('c1');
  await until('the edit is taken', () => state.newestSeq === 5);
  const events = [];
  client.addEventListener('conversation', (event) => events.push(event.detail));
  assert.equal(state.newestSeq, 5, 'the change is the sync cursor now');
  assert.equal(state.messages.get(3).body.text, 'text 3, fixed');
  assert.equal(state.unread, 2, 'two new messages from bob; his edit is not one');
  assert.equal(state.lastMessage.seq, 4, 'an edit of an older message is not the last message');

  // A reaction at 9 after a jump: 6..8 are filled first (8 is a message, 6 and 7 are changes the page skips).
  const reacted = { ...message(4), reactions: [{ emoji: '👍', count: 1, me: false }], revision: 14 };
  socket.receive({ type: 'message_updated', update: update(9, 4, 'reaction', 'bob', { emoji: '👍', action: 'add' }), message: reacted });
  await until('the gap is filled', () => state.newestSeq === 9);
  assert.ok(requests.includes('GET /v1/conversations/c1/messages?after=5&limit=3'));
  assert.deepEqual(state.timeline().map((item) => item.message.seq), [3, 4, 8]);
  assert.deepEqual(state.messages.get(4).reactions, [{ emoji: '👍', count: 1, me: false }]);
  assert.equal(state.unread, 3, 'message 8 counts, the reaction does not');
  assert.equal(state.lastMessage.seq, 8);
  assert.ok(events.some((detail) => detail.update?.seq === 9), 'the change is announced with its update');

  // A late frame carrying an older view changes nothing; deleting the last message shows its tombstone in the inbox.
  socket.receive({ type: 'message_updated', update: update(5, 3, 'edit'), message: { ...message(3), revision: 2 } });
  const tombstone = { ...message(8), body: {}, deleted: true, deleted_at: '2026-01-01T00:00:03Z', deleted_by: 'bob', revision: 20 };
  socket.receive({ type: 'message_updated', update: update(10, 8, 'delete'), message: tombstone });
  await until('the delete is taken', () => state.newestSeq === 10);
  assert.equal(state.messages.get(3).body.text, 'text 3, fixed');
  assert.equal(state.lastMessage.deleted, true);
  assert.equal(state.unread, 3);

  // Shown to the user, a change is read past at once (the server's unread counts entries, changes included).
  client.setActiveConversation('c1');
  socket.receive({ type: 'message_updated', update: update(11, 4, 'reaction', 'bob', { emoji: '🎉', action: 'add' }), message: { ...reacted, revision: 22 } });
  await until('a read receipt for the change', () => socket.sent.some((frame) => frame.type === 'read' && frame.seq === 11));
  assert.equal(state.unread, 0);
  client.stop();
});

test('edits, deletes and reactions go out as frames, resolve with their ack or reject with the error, and go again after a drop', async () => {
  const { client, socket, sync } = await syncedClient(() => undefined, [], { lastMessage: message(2) });
  socket.receive({ type: 'message', message: { ...message(3, 'alice'), reactions: [{ emoji: '👍', count: 1, me: true }], revision: 4 } });
  socket.receive({ type: 'synced', id: sync.id, cursors: { c1: 3 } });
  await until('synced', () => client.connectionState === 'online');

  const edited = client.changes.edit('c1', 3, 'better words');
  const frame = socket.sent.find((sent) => sent.type === 'edit');
  assert.deepEqual({ ...frame, id: undefined, client_msg_id: undefined }, { type: 'edit', id: undefined, conversation_id: 'c1', client_msg_id: undefined, seq: 3, body: { text: 'better words' } });
  socket.receive({ type: 'ack', id: frame.id, conversation_id: 'c1', client_msg_id: frame.client_msg_id, seq: 4, sent_at: '2026-01-01T00:00:05Z', duplicate: false });
  const ack = await edited;
  assert.equal(ack.seq, 4, 'the ack names the change\'s own seq');
  assert.equal(client.conversation('c1').pending.size, 0, 'a change is not a pending send');

  const refused = client.changes.delete('c1', 2);
  const deleteFrame = socket.sent.find((sent) => sent.type === 'delete');
  socket.receive({ type: 'error', id: deleteFrame.id, code: 'forbidden', message: 'only the sender may delete it' });
  await assert.rejects(refused, (error) => error.code === 'forbidden');

  // The held message shows my 👍: reacting with it again is a removal, another emoji an addition.
  const toggled = client.changes.react('c1', 3, '👍');
  const added = client.changes.react('c1', 3, '🎉');
  const reactFrames = socket.sent.filter((sent) => sent.type === 'react');
  assert.deepEqual(reactFrames.map((sent) => [sent.emoji, sent.action]), [['👍', 'remove'], ['🎉', 'add']]);

  socket.close(1001, 'server shutting down; reconnect');
  await until('a second socket', () => FakeSocket.all.length === 2);
  const second = FakeSocket.all[1];
  second.accept();
  second.receive({ type: 'synced', id: second.sent[0].id, cursors: { c1: 3 } });
  await until('both reactions go again', () => second.sent.filter((sent) => sent.type === 'react').length === 2);
  const resent = second.sent.filter((sent) => sent.type === 'react');
  assert.deepEqual(resent.map((sent) => sent.client_msg_id), reactFrames.map((sent) => sent.client_msg_id), 'under the same client_msg_ids');
  for (const sent of resent) second.receive({ type: 'ack', id: sent.id, conversation_id: 'c1', client_msg_id: sent.client_msg_id, seq: 9, sent_at: '2026-01-01T00:00:06Z', duplicate: true });
  assert.equal((await toggled).duplicate, true);
  await added;
  assert.equal(second.sent.filter((sent) => sent.type === 'edit').length, 0, 'an answered change is not sent again');
  client.stop();
});

test('paging back goes past holes, and a page with no message before a long run of changes is asked again wider', async () => {
  const requests = [];
  const { client, socket, sync } = await syncedClient((request) => {
    if (request === 'GET /v1/conversations/c1/messages?limit=3') return { messages: [message(50), message(52), message(55)], has_more: true };
    if (request === 'GET /v1/conversations/c1/messages?before=50&limit=3') return { messages: [], has_more: true };
    if (request === 'GET /v1/conversations/c1/messages?before=50&limit=200') return { messages: [message(1), message(2)], has_more: false };
    return undefined;
  }, requests, { lastMessage: message(55) });
  client.pageSize = 3;
  socket.receive({ type: 'synced', id: sync.id, cursors: { c1: 55 } });
  await until('synced', () => client.connectionState === 'online');
  assert.equal(await client.loadOlder('c1'), 3);
  const state = client.conversation('c1');
  assert.equal(state.hasMoreBefore, true);
  assert.equal(await client.loadOlder('c1'), 2);
  assert.deepEqual(state.timeline().map((item) => item.message.seq), [1, 2, 50, 52, 55]);
  assert.equal(state.hasMoreBefore, false);
  assert.ok(requests.includes('GET /v1/conversations/c1/messages?before=50&limit=200'));
  client.stop();
});
