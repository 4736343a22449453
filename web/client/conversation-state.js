// What one device holds of one conversation: a window of the log by seq (every entry in it accounted for: messages held, edits/deletes/reactions as holes), its own unacknowledged sends, and members' receipt watermarks.

/**
 * @typedef {import('./http-api.js').Message} Message
 * @typedef {import('./http-api.js').MessageBody} MessageBody
 * @typedef {import('./http-api.js').MessageUpdate} MessageUpdate
 * @typedef {'sending'|'sent'|'delivered'|'read'|'failed'} DeliveryState
 * @typedef {{client_msg_id: string, body: MessageBody, created_at: string, seq: number|null,
 *   state: 'sending'|'sent'|'failed', error: string|null}} PendingSend
 * @typedef {{kind: 'message', message: Message} | {kind: 'pending', pending: PendingSend}} TimelineItem
 */

/**
 * What `addMessage` or `addUpdate` did with a log entry. `refreshed`: the entry was already accounted for,
 * but it carried a newer view (higher `revision`) of a message held here, which replaced the old one.
 */
export const Added = Object.freeze({ ADDED: 'added', DUPLICATE: 'duplicate', GAP: 'gap', REFRESHED: 'refreshed' });

/** Views of messages not held that are kept for when they page in (see `viewsNotHeld`); the oldest go first. */
const MAX_VIEWS_NOT_HELD = 200;

/**
 * Whether `view` is a newer state of the same message than `held`: of two views the higher `revision` wins,
 * and a message never changed has none (it counts lowest), so an equal or older frame never undoes a change.
 * @param {Message} view
 * @param {Message} held
 */
export function isNewerView(view, held) {
  return (view.revision ?? 0) > (held.revision ?? 0);
}

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
    /**
     * Every message with a seq in oldestSeq..newestSeq, as it now stands. The seqs between them are edits,
     * deletes and reactions (log entries of their own, folded into their messages), so holes are expected.
     * @type {Map<number, Message>}
     */
    this.messages = new Map();
    /**
     * The highest seq this device has accounted for: the newest held message or change, or (with none held)
     * the last seq the inbox reported. It is this conversation's `sync` cursor.
     */
    this.newestSeq = 0;
    /** @type {number|null} */
    this.oldestSeq = null;
    /** Whether messages older than `oldestSeq` exist on the server (unknown counts as yes). */
    this.hasMoreBefore = true;
    /**
     * The newest view `message_updated` frames brought of messages not held. A page on its way may have been
     * read before those changes, and the window does not see them again: a message paging in takes the newer.
     * @type {Map<number, Message>}
     */
    this.viewsNotHeld = new Map();
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
   * Where a log entry falls: already accounted for (dedupe), the next one, or past a gap. With nothing held,
   * anything after the cursor starts the window: what came before it is older history, paged in on demand.
   * @param {number} seq
   * @returns {'added'|'duplicate'|'gap'}
   */
  place(seq) {
    if (seq <= this.newestSeq) return Added.DUPLICATE;
    if (this.loaded && seq > this.newestSeq + 1) return Added.GAP;
    return Added.ADDED;
  }

  /**
   * Takes a message from the live stream, a sync or a page. Duplicates (a seq already accounted for)
   * change nothing but a newer view of a held message; a seq beyond `newestSeq + 1` while messages are
   * held is a gap the caller fills first.
   * @param {Message} message
   * @returns {'added'|'duplicate'|'gap'|'refreshed'}
   */
  addMessage(message) {
    this.settlePending(message);
    const place = this.place(message.seq);
    if (place === Added.DUPLICATE) return this.refresh(message) ? Added.REFRESHED : Added.DUPLICATE;
    if (place === Added.GAP) return place;
    this.hold(message);
    return Added.ADDED;
  }

  /**
   * Takes an edit, delete or reaction (a `message_updated` frame). Its own seq is accounted for in order,
   * exactly like a message's (a jump is a gap to fill first), and its view of the target replaces the held
   * one when newer. It is not a new message: `lastMessage` and the unread count are the caller's to keep.
   * @param {MessageUpdate} update
   * @param {Message|undefined} view the target as it now stands (absent when it expired)
   * @returns {'added'|'duplicate'|'gap'|'refreshed'}
   */
  addUpdate(update, view) {
    const place = this.place(update.seq);
    if (place === Added.GAP) return place;
    // A frame may carry a state newer than its own change (or be a resend in a sync): the view counts either way.
    const refreshed = view ? this.refresh(view) : false;
    if (view && !this.messages.has(view.seq)) this.rememberView(view);
    if (place === Added.DUPLICATE) return refreshed ? Added.REFRESHED : Added.DUPLICATE;
    this.newestSeq = update.seq;
    return Added.ADDED;
  }

  /**
   * Replaces the held message and the inbox's last message with `view` where it is newer.
   * @param {Message} view
   * @returns {boolean} whether anything changed
   */
  refresh(view) {
    let changed = false;
    const held = this.messages.get(view.seq);
    if (held && isNewerView(view, held)) {
      this.messages.set(view.seq, view);
      changed = true;
    }
    // The inbox's last message may be held nowhere else: a deleted or edited one shows its new state too.
    if (this.lastMessage?.seq === view.seq && isNewerView(view, this.lastMessage)) {
      this.lastMessage = view;
      changed = true;
    }
    return changed;
  }

  /** @param {Message} view of a message not held */
  rememberView(view) {
    const known = this.viewsNotHeld.get(view.seq);
    if (known && !isNewerView(view, known)) return;
    this.viewsNotHeld.delete(view.seq);
    this.viewsNotHeld.set(view.seq, view);
    if (this.viewsNotHeld.size > MAX_VIEWS_NOT_HELD) this.viewsNotHeld.delete(this.viewsNotHeld.keys().next().value);
  }

  /**
   * The newer of a message about to be held and a view a change brought earlier (which is then forgotten).
   * @param {Message} message
   */
  latestView(message) {
    const remembered = this.viewsNotHeld.get(message.seq);
    if (!remembered) return message;
    this.viewsNotHeld.delete(message.seq);
    return isNewerView(remembered, message) ? remembered : message;
  }

  /** Holds the message after `newestSeq` (the caller checked it belongs there). @param {Message} message */
  hold(message) {
    message = this.latestView(message);
    if (!this.loaded) {
      this.oldestSeq = message.seq;
      this.hasMoreBefore = message.seq > 1;
    }
    this.messages.set(message.seq, message);
    this.newestSeq = message.seq;
    this.lastMessage = message;
    // Sending moves the sender's own read watermark to its message (docs/protocol.md); no receipt says so.
    this.noteReceipt(message.sender, 'read', message.seq);
  }

  /**
   * An older page (ascending) from `history(before: oldestSeq)` or the latest page for an empty window.
   * The server guarantees a page holds every message from its lowest seq up to `before - 1` (it reads past
   * changes to fill up), so the seqs it skips are changes and the window may take all of it.
   * @param {Message[]} messages
   * @param {boolean} hasMore
   * @returns {number} how many messages were added
   */
  addOlderPage(messages, hasMore) {
    const ascending = messages.map((message) => (this.messages.has(message.seq) ? message : this.latestView(message))).sort((a, b) => a.seq - b.seq);
    if (!this.loaded) {
      if (ascending.length === 0) {
        // An empty page with more before it is a long run of changes: the caller may ask again, wider.
        this.hasMoreBefore = this.hasMoreBefore && hasMore;
        return 0;
      }
      for (const message of ascending) {
        this.messages.set(message.seq, message);
        this.settlePending(message);
        this.noteReceipt(message.sender, 'read', message.seq);
      }
      this.oldestSeq = ascending[0].seq;
      const newest = ascending[ascending.length - 1];
      if (!this.lastMessage || newest.seq > this.lastMessage.seq) this.lastMessage = newest;
      else this.refresh(newest);
      // The page defines the window; should the inbox have named a later seq, the next live entry is a gap
      // and gets filled, so nothing between is left unaccounted.
      this.newestSeq = newest.seq;
      this.hasMoreBefore = hasMore && this.oldestSeq > 1;
      return ascending.length;
    }
    let added = 0;
    for (const message of ascending) {
      if (message.seq >= this.oldestSeq) {
        this.refresh(message);
        continue;
      }
      this.messages.set(message.seq, message);
      this.settlePending(message);
      this.noteReceipt(message.sender, 'read', message.seq);
      added += 1;
    }
    if (added > 0) this.oldestSeq = ascending[0].seq;
    this.hasMoreBefore = hasMore && this.oldestSeq > 1;
    return added;
  }

  /**
   * A page from `history(after: newestSeq)` filling a gap before the live entry `liveSeq`. The page holds every
   * message from `newestSeq + 1` to its highest seq, so it may start after a hole (changes) and may run past
   * `liveSeq` (the server reads past changes to fill it): all of it is taken, in order. A last page
   * (`hasMore` false) means the rest before `liveSeq` are changes: they are accounted for too.
   * @param {Message[]} messages
   * @param {boolean} hasMore
   * @param {number} liveSeq
   * @returns {Message[]} the messages added, ascending
   */
  addNewerPage(messages, hasMore, liveSeq) {
    const added = [];
    for (const message of [...messages].sort((a, b) => a.seq - b.seq)) {
      this.settlePending(message);
      if (message.seq <= this.newestSeq) {
        this.refresh(message);
        continue;
      }
      this.hold(message);
      added.push(message);
    }
    if (!hasMore) this.newestSeq = Math.max(this.newestSeq, liveSeq - 1);
    return added;
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

  /**
   * Takes what the inbox says of this conversation.
   * @param {import('./http-api.js').InboxEntry} entry
   * @param {boolean} beingRead shown to the user right now: nothing in it is unread
   * @param {number} prefetch how many unread messages the first sync fetches at most
   */
  applyInboxEntry(entry, beingRead, prefetch) {
    this.kind = entry.kind;
    this.title = entry.title;
    this.unread = beingRead ? 0 : entry.unread;
    const last = entry.last_message;
    if (!last) return;
    this.unreadCountedThrough = Math.max(this.unreadCountedThrough, last.seq);
    // While messages are held, the live stream owns the window; the inbox only places empty ones.
    if (this.loaded) return;
    // The sync cursor stops short of the unread messages: they arrive at once, and the server
    // records them as delivered to this device, which is what the sender's "delivered" means.
    const cursor = Math.max(0, last.seq - Math.min(entry.unread, prefetch));
    if (cursor > this.newestSeq) this.newestSeq = cursor;
    if (!this.lastMessage || last.seq > this.lastMessage.seq) this.lastMessage = last;
    else this.refresh(last);
  }

  /** I read up to `seq` on another device: clear what it covers here too. */
  readElsewhere(seq) {
    this.readSent = Math.max(this.readSent, seq);
    if (seq >= this.newestSeq) this.unread = 0;
    else if (this.loaded && seq >= this.oldestSeq) this.unread = this.countFromOthersAfter(seq);
    else this.unread = Math.min(this.unread, this.newestSeq - seq);
  }

  /** Messages from others after `seq` among those held, for an unread count after a read elsewhere. */
  countFromOthersAfter(seq) {
    let count = 0;
    for (const message of this.messages.values()) if (message.seq > seq && message.sender !== this.me) count += 1;
    return count;
  }
}
