// Who is typing where: each `typing` frame shows its user for a while, and our own keystrokes go out as at most one `typing` frame per conversation per 2 s.

/** The server forwards typing at most every 2 s; an indicator outlives that so it does not flicker. */
const TYPING_SHOWN_MS = 3500;
const TYPING_SEND_INTERVAL_MS = 2000;

export class Typing {
  /**
   * @param {{me: string, connection: import('./connection.js').Connection, onChange: (conversationId: string) => void}} options
   */
  constructor({ me, connection, onChange }) {
    this.me = me;
    this.connection = connection;
    this.onChange = onChange;
    /** @type {Map<string, Map<string, ReturnType<typeof setTimeout>>>} conversation → typing user → expiry */
    this.typists = new Map();
    /** @type {Map<string, number>} conversation → when we last sent `typing` */
    this.lastSent = new Map();
  }

  /** @returns {string[]} users typing in the conversation right now */
  users(conversationId) {
    return [...(this.typists.get(conversationId)?.keys() ?? [])];
  }

  /** Call on every keystroke: at most one `typing` frame per conversation per 2 s goes out. */
  send(conversationId) {
    const now = Date.now();
    if (now - (this.lastSent.get(conversationId) ?? 0) < TYPING_SEND_INTERVAL_MS) return;
    if (this.connection.send({ type: 'typing', conversation_id: conversationId })) this.lastSent.set(conversationId, now);
  }

  /** @param {{conversation_id: string, user: string}} frame */
  receive(frame) {
    if (frame.user === this.me) return;
    const typists = this.typists.get(frame.conversation_id) ?? new Map();
    this.typists.set(frame.conversation_id, typists);
    clearTimeout(typists.get(frame.user));
    typists.set(frame.user, setTimeout(() => this.clear(frame.conversation_id, frame.user), TYPING_SHOWN_MS));
    this.onChange(frame.conversation_id);
  }

  /** The user stopped (their message arrived, or the indicator timed out). */
  clear(conversationId, user) {
    const typists = this.typists.get(conversationId);
    if (!typists?.has(user)) return;
    clearTimeout(typists.get(user));
    typists.delete(user);
    this.onChange(conversationId);
  }
}
