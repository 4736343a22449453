// A small client for Natter's protocol (PROTOCOL.md): resumable sync, optimistic sends, edits/deletes/reactions, receipts, typing, presence, history, media and search, as events an app renders from.

import { HttpApi, NatterApiError, userOfToken } from './http-api.js';
import { Connection } from './connection.js';
import { Added, ConversationState } from './conversation-state.js';
import { MediaUploads } from './media-uploads.js';
import { ChangeRequests } from './message-changes.js';
import { Typing } from './typing.js';

export { HttpApi, NatterApiError, requestDevToken, userOfToken } from './http-api.js';
export { Connection } from './connection.js';
export { ConversationState } from './conversation-state.js';
export { MediaRejectedError } from './media-uploads.js';

/** Messages per history page when scrolling back. */
const DEFAULT_PAGE_SIZE = 30;
/** Unread messages a conversation's first sync fetches ahead; the rest page in from history. */
const UNREAD_PREFETCH = 100;
/** The server's largest page: fills a gap in as few requests as possible, and pages past a long run of changes. */
const MAX_PAGE_SIZE = 200;

/** An id matching `[A-Za-z0-9_-]{1,64}`; `crypto.randomUUID` is missing outside secure contexts. */
export function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map((byte) => byte.toString(16).padStart(2, '0')).join('');
}

/**
 * Events: `connection` {state: 'connecting'|'syncing'|'online'|'offline'|'stopped', retryInMs?},
 * `conversations` (the inbox changed), `conversation` {id, update?} (`update`: an edit, delete or reaction), `typing` {conversationId},
 * `presence` {user}, `media` {media_id, status, reason?}, `problem` {message}, `auth-failed`.
 */
export class NatterClient extends EventTarget {
  /**
   * @param {{baseUrl: string, token: string, deviceId: string, WebSocket?: typeof WebSocket, fetch?: typeof fetch,
   *   backoff?: {initialMs: number, maxMs: number}, pingIntervalMs?: number, pageSize?: number}} options
   */
  constructor({ baseUrl, token, deviceId, WebSocket: WebSocketImpl, fetch: fetchImpl, backoff, pingIntervalMs, pageSize = DEFAULT_PAGE_SIZE }) {
    super();
    this.me = userOfToken(token);
    this.deviceId = deviceId;
    this.pageSize = pageSize;
    this.api = new HttpApi({ baseUrl, token, deviceId, fetch: fetchImpl });
    const wsUrl = new URL('/v1/ws', baseUrl);
    wsUrl.protocol = wsUrl.protocol === 'https:' ? 'wss:' : 'ws:';
    this.connection = new Connection({ wsUrl: wsUrl.toString(), token, deviceId, WebSocket: WebSocketImpl, backoff, pingIntervalMs });
    /** @type {Map<string, ConversationState>} */
    this.conversations = new Map();
    /** @type {Map<string, {status: 'online'|'offline', lastSeen: string|null}>} */
    this.presence = new Map();
    this.typing = new Typing({ me: this.me, connection: this.connection, onChange: (conversationId) => this.emit('typing', { conversationId }) });
    /** @type {Map<string, {conversationId: string, clientMsgId: string}>} send frame id → the send */
    this.sendsInFlight = new Map();
    this.media = new MediaUploads(this.api);
    /** Edits, deletes and reactions: `changes.edit`, `changes.delete`, `changes.react` resolve with the ack. */
    this.changes = new ChangeRequests({
      connection: this.connection, isSynced: () => this.synced, nextFrameId: () => `change-${this.nextFrameNumber++}`, newClientMsgId: randomId,
      heldMessage: (conversationId, seq) => this.conversations.get(conversationId)?.messages.get(seq),
    });
    this.olderPageLoads = new Map();
    /** Frames are handled one at a time, in arrival order, even when one needs an HTTP round trip. */
    this.frameQueue = Promise.resolve();
    this.syncFrameId = null;
    this.synced = false;
    this.nextFrameNumber = 1;
    this.activeConversationId = null;
    this.connection.addEventListener('open', () => this.beginSync());
    this.connection.addEventListener('frame', (event) => this.enqueueFrame(event.detail));
    this.connection.addEventListener('state', (event) => this.onConnectionState(event.detail));
    this.onBrowserOnline = () => this.connection.reconnectNow();
  }

  /** Loads the inbox, then connects; live frames and missed messages flow from there on. */
  async start() {
    await this.refreshInbox();
    globalThis.addEventListener?.('online', this.onBrowserOnline);
    this.connection.start();
  }

  stop() {
    globalThis.removeEventListener?.('online', this.onBrowserOnline);
    this.connection.stop();
  }

  /** @returns {'connecting'|'syncing'|'online'|'offline'|'stopped'} */
  get connectionState() {
    const state = this.connection.state;
    if (state === 'open') return this.synced ? 'online' : 'syncing';
    if (state === 'waiting') return 'offline';
    return state;
  }

  /** @returns {ConversationState[]} newest activity first */
  conversationList() {
    const activity = (state) => state.lastMessage?.sent_at ?? '';
    return [...this.conversations.values()].sort((a, b) => activity(b).localeCompare(activity(a)));
  }

  /** @param {string} id */
  conversation(id) {
    return this.conversations.get(id);
  }

  /** The app shows this conversation (null: none): new messages in it count as read while the page is visible. */
  setActiveConversation(id) {
    this.activeConversationId = id;
    if (id) this.markRead(id);
  }

  isBeingRead(id) {
    return this.activeConversationId === id && (globalThis.document?.visibilityState ?? 'visible') === 'visible';
  }

  /** @returns {{status: 'online'|'offline', lastSeen: string|null}|undefined} */
  presenceOf(user) {
    return this.presence.get(user);
  }

  /** @returns {string[]} users typing in the conversation right now */
  typingUsers(conversationId) {
    return this.typing.users(conversationId);
  }

  async refreshInbox() {
    const entries = await this.api.inbox();
    for (const entry of entries) this.ensureConversation(entry.id).applyInboxEntry(entry, this.isBeingRead(entry.id), UNREAD_PREFETCH);
    this.emit('conversations');
    await Promise.all([...this.conversations.values()].filter((state) => state.members === null).map((state) => this.loadDetails(state)));
  }

  /** @param {ConversationState} state */
  async loadDetails(state) {
    try {
      const details = await this.api.conversation(state.id);
      this.applyDetails(details);
    } catch (error) {
      this.problem(`could not load conversation ${state.id}: ${error.message}`);
    }
  }

  /** @param {import('./http-api.js').Conversation} details */
  applyDetails(details) {
    const state = this.ensureConversation(details.id);
    state.kind = details.kind;
    state.title = details.title;
    state.members = details.members.map((member) => member.user);
    this.emit('conversation', { id: state.id });
    this.emit('conversations');
    return state;
  }

  ensureConversation(id) {
    let state = this.conversations.get(id);
    if (!state) {
      state = new ConversationState(id, this.me);
      this.conversations.set(id, state);
    }
    return state;
  }

  /** @returns {Promise<ConversationState>} */
  async openDirect(user) {
    return this.applyDetails(await this.api.openDirect(user));
  }

  /** @returns {Promise<ConversationState>} */
  async createGroup(title, members) {
    return this.applyDetails(await this.api.createGroup(title, members));
  }

  async addMember(conversationId, user) {
    return this.applyDetails(await this.api.addMember(conversationId, user));
  }

  /**
   * Loads the page before the oldest held message (or the latest page when none is held).
   * @returns {Promise<number>} how many messages were added
   */
  async loadOlder(conversationId) {
    const running = this.olderPageLoads.get(conversationId);
    if (running) return running;
    const state = this.ensureConversation(conversationId);
    const load = (async () => {
      if (state.loaded && !state.hasMoreBefore) return 0;
      const heldBefore = state.messages.size;
      // Asked at call time: a live message may have started the window while the latest page was on its way.
      const older = (limit) => this.api.history(conversationId, state.loaded ? { before: state.oldestSeq, limit } : { limit });
      let page = await older(this.pageSize);
      if (state.addOlderPage(page.messages, page.has_more) === 0 && page.has_more) {
        // The server reads past changes only so far: a longer run of them gets the largest page once more.
        page = await older(MAX_PAGE_SIZE);
        if (state.addOlderPage(page.messages, page.has_more) === 0 && page.has_more) {
          state.hasMoreBefore = false;
          this.problem(`older messages of ${conversationId} are behind more changes than one page reads past`);
        }
      }
      this.emit('conversation', { id: conversationId });
      if (this.isBeingRead(conversationId)) this.markRead(conversationId);
      return state.messages.size - heldBefore;
    })();
    this.olderPageLoads.set(conversationId, load);
    try {
      return await load;
    } finally {
      this.olderPageLoads.delete(conversationId);
    }
  }

  /**
   * Sends at once when synced, else when the connection is back; shown as `sending` meanwhile.
   * @param {string} conversationId
   * @param {import('./http-api.js').MessageBody} body
   * @returns {string} the client_msg_id
   */
  send(conversationId, body) {
    const state = this.ensureConversation(conversationId);
    const clientMsgId = randomId();
    state.addPending(clientMsgId, body);
    this.emit('conversation', { id: conversationId });
    if (this.synced) this.writeSend(conversationId, clientMsgId);
    return clientMsgId;
  }

  sendText(conversationId, text) {
    return this.send(conversationId, { text });
  }

  /** Sends a failed message again, under the same client_msg_id (the server never stores it twice). */
  retrySend(conversationId, clientMsgId) {
    const pending = this.conversations.get(conversationId)?.pending.get(clientMsgId);
    if (!pending) return;
    pending.state = 'sending';
    pending.error = null;
    this.emit('conversation', { id: conversationId });
    if (this.synced) this.writeSend(conversationId, clientMsgId);
  }

  writeSend(conversationId, clientMsgId) {
    const pending = this.conversations.get(conversationId)?.pending.get(clientMsgId);
    if (!pending) return;
    const id = `send-${this.nextFrameNumber++}`;
    this.sendsInFlight.set(id, { conversationId, clientMsgId });
    this.connection.send({ type: 'send', id, conversation_id: conversationId, client_msg_id: clientMsgId, body: pending.body });
  }

  /** Tells the server (and so the sender and my other devices) that everything held here is read. */
  markRead(conversationId) {
    const state = this.conversations.get(conversationId);
    if (!state) return;
    const hadUnread = state.unread > 0;
    state.unread = 0;
    const seq = state.newestSeq;
    if (seq > state.readSent) {
      state.readSent = seq;
      const frame = { type: 'read', conversation_id: conversationId, seq };
      if (!this.connection.send(frame)) {
        this.api.postReceipt(conversationId, seq, 'read').catch((error) => this.problem(`could not send a read receipt: ${error.message}`));
      }
    }
    if (hadUnread) this.emit('conversations');
  }

  /** Call on every keystroke: at most one `typing` frame per conversation per 2 s goes out. */
  sendTyping(conversationId) {
    this.typing.send(conversationId);
  }

  /** @returns {Promise<{hits: import('./http-api.js').SearchHit[], next_cursor?: string}>} */
  search(q, options) {
    return this.api.search(q, options);
  }

  /**
   * Uploads a file and waits for the scan; resolves with ready media, throws MediaRejectedError otherwise.
   * @param {Blob} file
   * @param {{onStatus?: (status: 'uploading'|'scanning') => void}} [options]
   */
  uploadMedia(file, options) {
    return this.media.upload(file, options);
  }

  /** Uploads, waits for the scan, then sends a message carrying the media (and an optional caption). */
  async sendMedia(conversationId, file, { text, onStatus } = {}) {
    const info = await this.media.upload(file, { onStatus });
    return this.send(conversationId, text ? { media_id: info.media_id, text } : { media_id: info.media_id });
  }

  /** Metadata with signed URLs (cached while they are good). */
  mediaInfo(mediaId) {
    return this.media.info(mediaId);
  }

  beginSync() {
    this.synced = false;
    this.syncFrameId = `sync-${this.nextFrameNumber++}`;
    const cursors = {};
    for (const state of this.conversations.values()) cursors[state.id] = state.newestSeq;
    this.connection.send({ type: 'sync', id: this.syncFrameId, cursors });
    this.emitConnection();
  }

  enqueueFrame(frame) {
    this.frameQueue = this.frameQueue
      .then(() => this.handleFrame(frame))
      .catch((error) => this.problem(`could not handle a ${frame.type} frame: ${error.message}`));
  }

  async handleFrame(frame) {
    switch (frame.type) {
      case 'message':
        return this.receiveMessage(frame.message);
      case 'message_updated':
        return this.receiveUpdate(frame.update, frame.message);
      case 'ack':
        return this.receiveAck(frame);
      case 'synced':
        return this.receiveSynced(frame);
      case 'error':
        return this.receiveError(frame);
      case 'typing':
        return this.typing.receive(frame);
      case 'receipt':
        return this.receiveReceipt(frame);
      case 'presence':
        this.presence.set(frame.user, { status: frame.status, lastSeen: frame.last_seen ?? this.presence.get(frame.user)?.lastSeen ?? null });
        return this.emit('presence', { user: frame.user });
      case 'media':
        this.media.scanFinished(frame.media_id);
        return this.emit('media', frame);
      default:
        return undefined;
    }
  }

  async receiveMessage(message) {
    const known = this.conversations.has(message.conversation_id);
    const state = this.ensureConversation(message.conversation_id);
    if (!known) this.loadDetails(state);
    let outcome = state.addMessage(message);
    if (outcome === Added.GAP) {
      await this.fillGap(state, message.seq);
      outcome = state.addMessage(message);
    }
    if (outcome === Added.ADDED) this.afterNewMessage(state, message);
    else if (outcome === Added.REFRESHED) this.emit('conversation', { id: state.id });
  }

  /**
   * An edit, delete or reaction: its seq is accounted for in order like a message's (a jump is a gap filled
   * first), and the message it changed is shown as it now stands. It is no new message: no unread, no typing
   * cleared, the inbox keeps its last message (showing that message's new state if it is the one changed).
   * @param {import('./http-api.js').MessageUpdate} update
   * @param {import('./http-api.js').Message} [view]
   */
  async receiveUpdate(update, view) {
    const state = this.conversations.get(update.conversation_id);
    // A change needs a message before it: the conversation is known here unless the inbox has yet to list it.
    if (!state) return;
    let outcome = state.addUpdate(update, view);
    if (outcome === Added.GAP) {
      await this.fillGap(state, update.seq);
      outcome = state.addUpdate(update, view);
    }
    if (outcome === Added.DUPLICATE || outcome === Added.GAP) return;
    // Read past it while shown: the server's unread count counts changes too (docs/protocol.md, known limits).
    if (outcome === Added.ADDED && this.isBeingRead(state.id)) this.markRead(state.id);
    this.emit('conversation', { id: state.id, update });
    if (state.lastMessage?.seq === update.target_seq) this.emit('conversations');
  }

  /** Fetches the messages between the window's newest and `seq` (exclusive), in order; the seqs skipped are changes. */
  async fillGap(state, seq) {
    while (state.newestSeq < seq - 1) {
      const accountedBefore = state.newestSeq;
      const page = await this.api.history(state.id, { after: state.newestSeq, limit: Math.min(MAX_PAGE_SIZE, seq - 1 - state.newestSeq) });
      for (const message of state.addNewerPage(page.messages, page.has_more, seq)) this.afterNewMessage(state, message);
      if (state.newestSeq === accountedBefore) break;
    }
  }

  afterNewMessage(state, message) {
    if (message.sender !== this.me) {
      this.typing.clear(state.id, message.sender);
      if (this.isBeingRead(state.id)) this.markRead(state.id);
      else if (message.seq > state.unreadCountedThrough) state.unread += 1;
    } else {
      // My own message (from any of my devices) means I have seen everything before it.
      state.unread = state.countFromOthersAfter(message.seq);
    }
    this.emit('conversation', { id: state.id });
    this.emit('conversations');
  }

  receiveAck(frame) {
    if (this.changes.receiveAck(frame)) return;
    this.sendsInFlight.delete(frame.id);
    this.conversations.get(frame.conversation_id)?.acknowledge(frame.client_msg_id, frame.seq);
    this.emit('conversation', { id: frame.conversation_id });
  }

  receiveSynced(frame) {
    if (frame.id !== this.syncFrameId) return;
    this.synced = true;
    this.connection.markHealthy();
    this.emitConnection();
    // Sends that never got an ack go again under the same client_msg_id: stored once whatever happened.
    this.sendsInFlight.clear();
    for (const state of this.conversations.values()) {
      for (const pending of state.pending.values()) if (pending.state === 'sending') this.writeSend(state.id, pending.client_msg_id);
    }
    this.changes.resendAll();
    // Conversations that began while this device was away are not in a sync; the inbox names them.
    this.refreshInbox().catch((error) => this.problem(`could not refresh the inbox: ${error.message}`));
  }

  async receiveError(frame) {
    if (frame.id && frame.id === this.syncFrameId) {
      // A conversation we named was left or removed: drop what the inbox no longer lists, sync again.
      try {
        const listed = new Set((await this.api.inbox()).map((entry) => entry.id));
        for (const id of [...this.conversations.keys()]) if (!listed.has(id)) this.conversations.delete(id);
        this.emit('conversations');
        this.beginSync();
      } catch (error) {
        this.problem(`sync was refused (${frame.message}) and the inbox could not be read: ${error.message}`);
        this.connection.dropAndRetry('sync refused');
      }
      return;
    }
    if (this.changes.receiveError(frame)) return;
    const send = frame.id ? this.sendsInFlight.get(frame.id) : undefined;
    if (!send) {
      this.problem(frame.message);
      return;
    }
    this.sendsInFlight.delete(frame.id);
    if (frame.code === 'rate_limited') {
      setTimeout(() => this.writeSend(send.conversationId, send.clientMsgId), frame.retry_after_ms ?? 1000);
      return;
    }
    this.conversations.get(send.conversationId)?.failPending(send.clientMsgId, frame.message);
    this.emit('conversation', { id: send.conversationId });
  }

  receiveReceipt(frame) {
    const state = this.conversations.get(frame.conversation_id);
    if (!state) return;
    state.noteReceipt(frame.user, frame.kind, frame.seq);
    if (frame.user === this.me && frame.kind === 'read') {
      // Read on another of my devices: clear what it covers here too.
      state.readElsewhere(frame.seq);
      this.emit('conversations');
    }
    this.emit('conversation', { id: frame.conversation_id });
  }

  async onConnectionState({ state, retryInMs }) {
    if (state !== 'open') this.synced = false;
    this.emitConnection(retryInMs);
    // A refused upgrade looks like any failed socket; ask over HTTP whether the token is the reason.
    if (state === 'waiting' && this.connection.failedAttempts >= 2) {
      try {
        await this.api.inbox();
      } catch (error) {
        if (error instanceof NatterApiError && error.code === 'unauthorized') {
          this.stop();
          this.emit('auth-failed');
        }
      }
    }
  }

  emitConnection(retryInMs) {
    this.emit('connection', { state: this.connectionState, retryInMs });
  }

  problem(message) {
    this.emit('problem', { message });
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
