// The HTTP half of the Natter client protocol (PROTOCOL.md): sign-in, conversations, history, edits/deletes/reactions, receipts, media and search.

/** Content types the gateway accepts for uploads (docs/protocol.md, Media); anything else goes up as octet-stream. */
export const UPLOAD_CONTENT_TYPES = new Set([
  'image/jpeg', 'image/png', 'image/webp', 'image/gif', 'application/pdf', 'text/plain',
  'application/zip', 'application/octet-stream', 'audio/mpeg', 'audio/ogg', 'video/mp4',
]);

/**
 * @typedef {{text?: string, media_id?: string, ciphertext?: string}} MessageBody
 * @typedef {{emoji: string, count: number, me: boolean}} ReactionSummary
 * @typedef {{conversation_id: string, seq: number, client_msg_id: string, sender: string,
 *   sender_device: string, sent_at: string, body: MessageBody, reply_to?: number, edited_at?: string,
 *   deleted?: boolean, deleted_at?: string, deleted_by?: string, reactions?: ReactionSummary[],
 *   revision?: number}} Message
 *   A message as it now stands (docs/protocol.md, "Edits, deletes and reactions"): a deleted one has body `{}`;
 *   of two views of one message the higher `revision` is newer (absent: never changed).
 * @typedef {{conversation_id: string, seq: number, kind: 'edit'|'delete'|'reaction', target_seq: number,
 *   client_msg_id: string, sender: string, sender_device: string, sent_at: string, body?: MessageBody,
 *   emoji?: string, action?: 'add'|'remove'}} MessageUpdate
 *   An edit, delete or reaction: a log entry with its own `seq`, pointing at the message `target_seq`.
 * @typedef {{conversation_id: string, seq: number, client_msg_id: string, sent_at: string, duplicate: boolean}} SendReply
 *   The answer to a send or change (an `ack` frame carries the same fields); `seq` is the entry's own.
 * @typedef {{user: string, role: string}} Member
 * @typedef {{id: string, kind: 'direct'|'group', title: string|null, members: Member[], created_at: string}} Conversation
 * @typedef {{id: string, kind: 'direct'|'group', title: string|null, last_message: Message|null, unread: number}} InboxEntry
 * @typedef {{media_id: string, status: 'pending'|'ready'|'rejected', content_type?: string, size?: number,
 *   reason?: string, url?: string, thumbnail_url?: string,
 *   thumbnail?: {width: number, height: number, content_type: string, size: number}}} MediaInfo
 * @typedef {{message: Message, highlight: string}} SearchHit
 */

/** An HTTP error answer: `code` is the protocol's error code (`forbidden`, `rate_limited`, …). */
export class NatterApiError extends Error {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} message
   * @param {number|undefined} retryAfterMs
   */
  constructor(status, code, message, retryAfterMs) {
    super(message);
    this.name = 'NatterApiError';
    this.status = status;
    this.code = code;
    this.retryAfterMs = retryAfterMs;
  }
}

/**
 * Dev-mode sign-in: a token for `user`. Fails with code `not_found` when the server is not in dev mode.
 * @param {string} baseUrl
 * @param {string} user
 * @param {typeof fetch} [fetchImpl]
 * @returns {Promise<string>}
 */
export async function requestDevToken(baseUrl, user, fetchImpl = globalThis.fetch) {
  const response = await fetchImpl(new URL('/v1/dev/token', baseUrl), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user }),
  });
  const answer = await readAnswer(response);
  return answer.token;
}

/**
 * The `sub` claim of a JWT (the user id), read without verifying: the server verifies.
 * @param {string} token
 * @returns {string}
 */
export function userOfToken(token) {
  const payload = token.split('.')[1];
  if (!payload) throw new Error('this is not a JWT');
  const json = atob(payload.replace(/-/g, '+').replace(/_/g, '/'));
  const claims = JSON.parse(json);
  if (typeof claims.sub !== 'string') throw new Error('the token names no user (sub)');
  return claims.sub;
}

/** @param {Response} response */
async function readAnswer(response) {
  if (response.status === 204) return null;
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    const error = body?.error ?? { code: 'internal', message: text || response.statusText };
    throw new NatterApiError(response.status, error.code, error.message, error.retry_after_ms);
  }
  return body;
}

/** @param {string} conversationId @param {number} seq */
function messagePath(conversationId, seq) {
  return `/v1/conversations/${encodeURIComponent(conversationId)}/messages/${seq}`;
}

export class HttpApi {
  /**
   * @param {{baseUrl: string, token: string, deviceId: string, fetch?: typeof fetch}} options
   */
  constructor({ baseUrl, token, deviceId, fetch: fetchImpl = globalThis.fetch.bind(globalThis) }) {
    this.baseUrl = baseUrl;
    this.token = token;
    this.deviceId = deviceId;
    this.fetch = fetchImpl;
  }

  /**
   * @param {string} method
   * @param {string} path with its query
   * @param {unknown} [body] sent as JSON
   */
  async request(method, path, body) {
    const headers = { authorization: `Bearer ${this.token}` };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const response = await this.fetch(new URL(path, this.baseUrl), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return readAnswer(response);
  }

  /** @returns {Promise<InboxEntry[]>} newest activity first */
  async inbox() {
    return (await this.request('GET', '/v1/conversations')).conversations;
  }

  /** @param {string} id @returns {Promise<Conversation>} */
  conversation(id) {
    return this.request('GET', `/v1/conversations/${encodeURIComponent(id)}`);
  }

  /** The one direct conversation with `user` (the same for both sides). @returns {Promise<Conversation>} */
  openDirect(user) {
    return this.request('POST', '/v1/conversations', { kind: 'direct', members: [user] });
  }

  /** @param {string} title @param {string[]} members @returns {Promise<Conversation>} */
  createGroup(title, members) {
    return this.request('POST', '/v1/conversations', { kind: 'group', title, members });
  }

  /** @returns {Promise<Conversation>} */
  addMember(conversationId, user) {
    return this.request('POST', `/v1/conversations/${encodeURIComponent(conversationId)}/members`, { user });
  }

  removeMember(conversationId, user) {
    return this.request('DELETE', `/v1/conversations/${encodeURIComponent(conversationId)}/members/${encodeURIComponent(user)}`);
  }

  /**
   * One page of history, ascending by seq: the latest page, or the page before/after a seq.
   * @param {string} conversationId
   * @param {{before?: number, after?: number, limit?: number}} [page]
   * @returns {Promise<{messages: Message[], has_more: boolean, updates?: MessageUpdate[]}>} `updates`: encrypted conversations only, the changes the server could not fold
   */
  history(conversationId, { before, after, limit } = {}) {
    const query = new URLSearchParams();
    if (before !== undefined) query.set('before', String(before));
    if (after !== undefined) query.set('after', String(after));
    if (limit !== undefined) query.set('limit', String(limit));
    return this.request('GET', `/v1/conversations/${encodeURIComponent(conversationId)}/messages?${query}`);
  }

  /**
   * The HTTP twin of an `edit` frame: replaces the text of my message `seq`.
   * @param {string} conversationId
   * @param {number} seq
   * @param {string} clientMsgId the same on a retry, so the edit is stored once
   * @param {string} text
   * @returns {Promise<SendReply>}
   */
  editMessage(conversationId, seq, clientMsgId, text) {
    return this.request('PATCH', `${messagePath(conversationId, seq)}?device=${encodeURIComponent(this.deviceId)}`, { client_msg_id: clientMsgId, body: { text } });
  }

  /**
   * The HTTP twin of a `delete` frame (mine, or any in a group I own); the server takes no device for it.
   * @param {string} conversationId
   * @param {number} seq
   * @param {string} clientMsgId without one every request would be a new delete, and a retry would find the message gone
   * @returns {Promise<SendReply>}
   */
  deleteMessage(conversationId, seq, clientMsgId) {
    return this.request('DELETE', `${messagePath(conversationId, seq)}?client_msg_id=${encodeURIComponent(clientMsgId)}`);
  }

  /**
   * The HTTP twin of a `react` frame.
   * @param {string} conversationId
   * @param {number} seq
   * @param {string} clientMsgId
   * @param {string} emoji
   * @param {'add'|'remove'} [action]
   * @returns {Promise<SendReply>}
   */
  react(conversationId, seq, clientMsgId, emoji, action = 'add') {
    return this.request('POST', `${messagePath(conversationId, seq)}/reactions?device=${encodeURIComponent(this.deviceId)}`, { client_msg_id: clientMsgId, emoji, action });
  }

  /** @param {'read'|'delivered'} kind */
  postReceipt(conversationId, seq, kind) {
    return this.request('POST', `/v1/receipts?device=${encodeURIComponent(this.deviceId)}`, { conversation_id: conversationId, seq, kind });
  }

  /**
   * @param {string} q
   * @param {{conversationId?: string, limit?: number, cursor?: string}} [options]
   * @returns {Promise<{hits: SearchHit[], next_cursor?: string}>}
   */
  search(q, { conversationId, limit, cursor } = {}) {
    const query = new URLSearchParams({ q });
    if (conversationId) query.set('conversation_id', conversationId);
    if (limit !== undefined) query.set('limit', String(limit));
    if (cursor) query.set('cursor', cursor);
    return this.request('GET', `/v1/search?${query}`);
  }

  /** @param {string} mediaId @returns {Promise<MediaInfo>} */
  mediaInfo(mediaId) {
    return this.request('GET', `/v1/media/${encodeURIComponent(mediaId)}`);
  }

  /**
   * Asks for an upload grant and PUTs the bytes; the media is `pending` until scanned.
   * @param {Blob} file
   * @returns {Promise<string>} the media id
   */
  async upload(file) {
    const contentType = UPLOAD_CONTENT_TYPES.has(file.type) ? file.type : 'application/octet-stream';
    const grant = await this.request('POST', '/v1/media', { content_type: contentType, size: file.size });
    // The upload URL is signed; it carries its own authority, so no bearer token goes with it.
    const response = await this.fetch(grant.upload_url, { method: 'PUT', body: file, headers: { 'content-type': contentType } });
    await readAnswer(response);
    return grant.media_id;
  }
}
