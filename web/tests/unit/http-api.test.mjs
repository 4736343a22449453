// Unit tests of the HTTP API's edit, delete and reaction twins: method, path, query (the device, as for sends) and body as docs/protocol.md names them.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HttpApi } from '../../client/http-api.js';

test('edits, deletes and reactions over HTTP carry their client_msg_id and answer with the send reply', async () => {
  const requests = [];
  const reply = { conversation_id: 'g 1', seq: 9, client_msg_id: 'c', sent_at: '2026-01-01T00:00:00Z', duplicate: false };
  const api = new HttpApi({
    baseUrl: 'http://gateway.test', token: 'token', deviceId: 'laptop',
    fetch: async (url, init) => {
      const { pathname, search } = new URL(url);
      requests.push([init.method, `${pathname}${search}`, init.body === undefined ? undefined : JSON.parse(init.body), init.headers.authorization]);
      return new Response(JSON.stringify(reply), { status: 201, headers: { 'content-type': 'application/json' } });
    },
  });
  assert.deepEqual(await api.editMessage('g 1', 3, 'e1', 'new text'), reply);
  await api.deleteMessage('g 1', 3, 'd-1');
  await api.react('g 1', 3, 'r1', '👍');
  await api.react('g 1', 3, 'r2', '👍', 'remove');
  assert.deepEqual(requests, [
    ['PATCH', '/v1/conversations/g%201/messages/3?device=laptop', { client_msg_id: 'e1', body: { text: 'new text' } }, 'Bearer token'],
    ['DELETE', '/v1/conversations/g%201/messages/3?client_msg_id=d-1', undefined, 'Bearer token'],
    ['POST', '/v1/conversations/g%201/messages/3/reactions?device=laptop', { client_msg_id: 'r1', emoji: '👍', action: 'add' }, 'Bearer token'],
    ['POST', '/v1/conversations/g%201/messages/3/reactions?device=laptop', { client_msg_id: 'r2', emoji: '👍', action: 'remove' }, 'Bearer token'],
  ]);
});
