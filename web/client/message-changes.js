// Edits, deletes and reactions sent from this device (docs/protocol.md, "Edits, deletes and reactions"): one socket frame each, answered by its ack, resent after a reconnect until answered.

import { NatterApiError } from './http-api.js';

/**
 * @typedef {import('./http-api.js').SendReply} SendReply
 * @typedef {{type: 'edit'|'delete'|'react', id: string, conversation_id: string, client_msg_id: string, seq: number,
 *   body?: {text: string}, emoji?: string, action?: 'add'|'remove'}} ChangeFrame
 */

/**
 * Changes waiting for their `ack` or `error`. A change does not show until its `message_updated` frame
 * arrives (every device of every member gets one, the sender's included), so there is no optimistic state
 * to undo here: the promise only tells the caller whether the server took it.
 */
export class ChangeRequests {
  /**
   * @param {{connection: import('./connection.js').Connection, isSynced: () => boolean, nextFrameId: () => string,
   *   newClientMsgId: () => string, heldMessage: (conversationId: string, seq: number) => import('./http-api.js').Message|undefined}} options
   */
  constructor({ connection, isSynced, nextFrameId, newClientMsgId, heldMessage }) {
    this.heldMessage = heldMessage;
    this.connection = connection;
    this.isSynced = isSynced;
    this.nextFrameId = nextFrameId;
    this.newClientMsgId = newClientMsgId;
    /** @type {Map<string, {frame: ChangeFrame, resolve: (ack: SendReply) => void, reject: (error: Error) => void}>} by frame id */
    this.inFlight = new Map();
  }

  /**
   * Replaces the text of my message `seq` (within the server's edit window).
   * @param {string} conversationId
   * @param {number} seq
   * @param {string} text
   * @returns {Promise<SendReply>} the ack: `seq` is the edit's own
   */
  edit(conversationId, seq, text) {
    return this.request({ type: 'edit', conversation_id: conversationId, seq, body: { text } });
  }

  /** Deletes message `seq` (mine, or any in a group I own). @param {string} conversationId @param {number} seq @returns {Promise<SendReply>} */
  delete(conversationId, seq) {
    return this.request({ type: 'delete', conversation_id: conversationId, seq });
  }

  /**
   * @param {string} conversationId
   * @param {number} seq
   * @param {string} emoji
   * @param {'add'|'remove'} [action] by default the opposite of what the held message shows (a toggle); adding what
   *   is there, or removing what is not, changes nothing
   * @returns {Promise<SendReply>}
   */
  react(conversationId, seq, emoji, action) {
    const mine = this.heldMessage(conversationId, seq)?.reactions?.some((reaction) => reaction.emoji === emoji && reaction.me);
    return this.request({ type: 'react', conversation_id: conversationId, seq, emoji, action: action ?? (mine ? 'remove' : 'add') });
  }

  /** @param {Omit<ChangeFrame, 'id'|'client_msg_id'>} fields @returns {Promise<SendReply>} */
  request(fields) {
    // One client_msg_id for the change's whole life: a resend after a drop is stored once.
    const frame = /** @type {ChangeFrame} */ ({ ...fields, id: this.nextFrameId(), client_msg_id: this.newClientMsgId() });
    return new Promise((resolve, reject) => {
      this.inFlight.set(frame.id, { frame, resolve, reject });
      // Unsynced, it waits: `resendAll` sends it once the session is back, like a queued message.
      if (this.isSynced()) this.connection.send(frame);
    });
  }

  /** After a sync: every change without an answer goes (again) under its client_msg_id. */
  resendAll() {
    for (const { frame } of this.inFlight.values()) this.connection.send(frame);
  }

  /**
   * @param {SendReply & {type: 'ack', id: string}} ack
   * @returns {boolean} whether the ack was for a change
   */
  receiveAck(ack) {
    const request = this.inFlight.get(ack.id);
    if (!request) return false;
    this.inFlight.delete(ack.id);
    const { type: _type, id: _id, ...reply } = ack;
    request.resolve(reply);
    return true;
  }

  /**
   * @param {{type: 'error', id?: string, code: string, message: string, retry_after_ms?: number}} error
   * @returns {boolean} whether the error was for a change
   */
  receiveError(error) {
    const request = error.id ? this.inFlight.get(error.id) : undefined;
    if (!request) return false;
    if (error.code === 'rate_limited') {
      // Changes count against the send rate: wait as told, then try again under the same client_msg_id.
      setTimeout(() => this.inFlight.has(error.id) && this.isSynced() && this.connection.send(request.frame), error.retry_after_ms ?? 1000);
      return true;
    }
    this.inFlight.delete(error.id);
    // Status 0: answered on the socket, not over HTTP; `code` is the protocol's (forbidden, not_found, …).
    request.reject(new NatterApiError(0, error.code, error.message, error.retry_after_ms));
    return true;
  }
}
