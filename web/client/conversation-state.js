// What one device holds of one conversation: a contiguous window of messages keyed by seq, its own unacknowledged sends, and members' receipt watermarks.

/**
 * @typedef {import('./http-api.js').Message} Message
 * @typedef {import('./http-api.js').MessageBody} MessageBody
 * @typedef {'sending'|'sent'|'delivered'|'read'|'failed'} DeliveryState
 * @typedef {{client_msg_id: string, body: MessageBody, created_at: string, seq: number|null,
 *   state: 'sending'|'sent'|'failed', error: string|null}} PendingSend
 * @typedef {{kind: 'message', message: Message} | {kind: 'pending', pending: PendingSend}} TimelineItem
 */

/** What `addMessage` did with a message. */
export const Added = Object.freeze({ ADDED: 'added', DUPLICATE: 'duplicate', GAP: 'gap' });

export class ConversationState {
  /**
   * @param {string} id
   * @param {string} me the signed-in user
   */
  constructor(id, me) {
    this.id = id;
    this.me = me;
    /** @type {'direct'|'group'|null} */
    this.kind = null;
    /** @type {string|null} */
    this.title = null;
    /** Member user ids; null until the conversation's details are loaded. @type {string[]|null} */
    this.members = null;
    /** @type {Map<number, Message>} always the seqs oldestSeq..newestSeq, no holes */
    this.messages = new Map();
    /**
     * The highest seq this device has accounted for: the newest held message, or (with none held)
     * the last seq the inbox reported. It is this conversation's `sync` cursor.
     */
    this.newestSeq = 0;
    /** @type {number|null} */
    this.oldestSeq = null;
    /** Whether messages older than `oldestSeq` exist on the server (unknown counts as yes). */
    this.hasMoreBefore = true;
    /** @type {Message|null} */
    this.lastMessage = null;
    this.unread = 0;
    /** The newest seq the inbox's `unread` count already covers: those messages must not count twice. */
    this.unreadCountedThrough = 0;
    /** The highest seq we told the server we read. */
    this.readSent = 0;
    /** @type {Map<string, PendingSend>} by client_msg_id, in send order */
    this.pending = new Map();
    /** @type {Map<string, number>} */
    this.readWatermarks = new Map();
    /** @type {Map<string, number>} */
    this.deliveredWatermarks = new Map();
  }

  /** Whether any message is held in memory (else the window is still to be loaded). */
  get loaded() {
    return this.messages.size > 0;
  }

  /**
   * Takes a message from the live stream, a sync or a page. Duplicates (a seq already accounted for)
   * change nothing; a seq beyond `newestSeq + 1` while messages are held is a gap the caller fills first.
   * @param {Message} message
   * @returns {'added'|'duplicate'|'gap'}
   */
  addMessage(message) {
    const seq = message.seq;
    this.settlePending(message);
    if (this.messages.has(seq) || (this.loaded ? seq < this.oldestSeq : seq <= this.newestSeq)) {
      return Added.DUPLICATE;
    }
    if (this.loaded && seq > this.newestSeq + 1) return Added.GAP;
    if (!this.loaded) {
      this.oldestSeq = seq;
      this.hasMoreBefore = seq > 1;
    }
    this.messages.set(seq, message);
    this.newestSeq = seq;
    this.lastMessage = message;
    // Sending moves the sender's own read watermark to its message (docs/protocol.md); no receipt says so.
    this.noteReceipt(message.sender, 'read', seq);
    return Added.ADDED;
  }

  /**
   * An older page (ascending) from `history(before: oldestSeq)` or the latest page for an empty window.
   * @param {Message[]} messages
   * @param {boolean} hasMore
   */
  addOlderPage(messages, hasMore) {
    if (!this.loaded) {
            const ascending = [...messages].sort((a, b) => a.seq - b.seq);
      if (ascending.length === 0) {
        this.hasMoreBefore = false;
        return;
      }
      for (const message of ascending) {
        this.messages.set(message.seq, message);
        this.settlePending(message);
        this.noteReceipt(message.sender, 'read', message.seq);
      }
      this.oldestSeq = ascending[0].seq;
      const newest = ascending[ascending.length - 1];
      // The page defines the window; should the inbox have named a later seq, the next live message
      // is a gap and gets filled, so the window never has a hole.
      if (newest.seq >= this.newestSeq) this.lastMessage = newest;
      this.newestSeq = newest.seq;
      this.hasMoreBefore = hasMore && this.oldestSeq > 1;
      return;
    }
    const older = messages.filter((message) => message.seq < this.oldestSeq).sort((a, b) => b.seq - a.seq);
    for (const message of older) {
      if (message.seq !== this.oldestSeq - 1) break;
      this.messages.set(message.seq, message);
      this.oldestSeq = message.seq;
      this.settlePending(message);
      this.noteReceipt(message.sender, 'read', message.seq);
    }
    this.hasMoreBefore = hasMore && this.oldestSeq > 1;
  }

  /**
   * Records a send before the server has it.
   * @param {string} clientMsgId
   * @param {MessageBody} body
   * @returns {PendingSend}
   */
  addPending(clientMsgId, body) {
    const pending = { client_msg_id: clientMsgId, body, created_at: new Date().toISOString(), seq: null, state: 'sending', error: null };
    this.pending.set(clientMsgId, pending);
    return pending;
  }

  /** The send is durable: it has its seq (its `message` frame may still be on the way). */
  acknowledge(clientMsgId, seq) {
    const pending = this.pending.get(clientMsgId);
    if (!pending) return;
    pending.seq = seq;
    pending.state = 'sent';
    pending.error = null;
    if (this.messages.has(seq)) this.pending.delete(clientMsgId);
  }

  failPending(clientMsgId, error) {
    const pending = this.pending.get(clientMsgId);
    if (!pending) return;
    pending.state = 'failed';
    pending.error = error;
  }

  /** @param {Message} message */
  settlePending(message) {
    if (message.sender === this.me && this.pending.has(message.client_msg_id)) this.pending.delete(message.client_msg_id);
  }

  /**
   * A member's read or delivered watermark moved (watermarks never go back).
   * @param {string} user
   * @param {'read'|'delivered'} kind
   * @param {number} seq
   */
  noteReceipt(user, kind, seq) {
    const watermarks = kind === 'read' ? this.readWatermarks : this.deliveredWatermarks;
    if ((watermarks.get(user) ?? 0) < seq) watermarks.set(user, seq);
  }

  /** The members other than me (empty until the members are known). */
  others() {
    return (this.members ?? []).filter((user) => user !== this.me);
  }

  /**
   * Where one of my messages stands: read when every other member read it, delivered when every other
   * member's device has it (a read implies delivery), else sent.
   * @param {number} seq
   * @returns {'sent'|'delivered'|'read'}
   */
  stateOfSeq(seq) {
    const others = this.others();
    if (others.length === 0) return 'sent';
    const read = (user) => (this.readWatermarks.get(user) ?? 0) >= seq;
    if (others.every(read)) return 'read';
    const delivered = (user) => read(user) || (this.deliveredWatermarks.get(user) ?? 0) >= seq;
    return others.every(delivered) ? 'delivered' : 'sent';
  }

  /**
   * @param {TimelineItem} item
   * @returns {DeliveryState|null} null for other people's messages
   */
  deliveryState(item) {
    if (item.kind === 'pending') {
      const { pending } = item;
      if (pending.state !== 'sent' || pending.seq === null) return pending.state;
      return this.stateOfSeq(pending.seq);
    }
    return item.message.sender === this.me ? this.stateOfSeq(item.message.seq) : null;
  }

  /** @returns {TimelineItem[]} held messages by seq, then my sends the log has not shown yet, in send order */
  timeline() {
    const items = [...this.messages.values()].sort((a, b) => a.seq - b.seq).map((message) => ({ kind: 'message', message }));
    for (const pending of this.pending.values()) items.push({ kind: 'pending', pending });
    return items;
  }

  /** Messages from others after `seq` among those held, for an unread count after a read elsewhere. */
  countFromOthersAfter(seq) {
    let count = 0;
    for (const message of this.messages.values()) if (message.seq > seq && message.sender !== this.me) count += 1;
    return count;
  }
}
