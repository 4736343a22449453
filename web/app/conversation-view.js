// One open conversation: messages that page in as you scroll up, optimistic sends with their delivery state, edits/deletes/reactions, typing, presence, image upload.

import { MediaRejectedError } from './natter-client.js';
import { byId, conversationName, describePresence, directPartner, element, formatTime } from './dom.js';
import { renderMessageState } from './message-state-view.js';

/** Within this many pixels of the top, older messages load; of the bottom, new ones keep the view pinned. */
const LOAD_OLDER_THRESHOLD_PX = 120;
const PINNED_TO_BOTTOM_PX = 80;
/** How far back opening a search hit pages to find its message (30 messages a page). */
const MAX_PAGES_TO_FOUND_MESSAGE = 20;

const STATE_LABELS = { sending: 'Sending…', sent: 'Sent', delivered: 'Delivered', read: 'Read', failed: 'Not sent' };

/**
 * The same key for my send before and after the log has it, so its element (and its state label) stays.
 * @param {import('./conversation-state.js').TimelineItem} item
 * @param {string} me
 */
function itemKey(item, me) {
  return item.kind === 'message' ? `${item.message.sender}/${item.message.client_msg_id}` : `${me}/${item.pending.client_msg_id}`;
}

export class ConversationView {
  /**
   * @param {import('./natter-client.js').NatterClient} client
   * @param {{onBack: () => void, onAddMember: (conversationId: string) => void}} callbacks
   */
  constructor(client, { onBack, onAddMember }) {
    this.client = client;
    /** @type {string|null} */
    this.conversationId = null;
    /** @type {Map<string, HTMLElement>} */
    this.nodes = new Map();
    this.pane = byId('conversation-pane');
    this.scroller = byId('message-scroller');
    this.list = byId('messages');
    this.composer = /** @type {HTMLFormElement} */ (byId('composer'));
    this.input = /** @type {HTMLTextAreaElement} */ (byId('composer-input'));
    this.attachInput = /** @type {HTMLInputElement} */ (byId('attach-input'));
    this.uploadStatus = byId('upload-status');
    this.loadOlderButton = byId('load-older');
    /** @type {import('./message-state-view.js').MessageActions} */
    this.messageActions = {
      me: client.me,
      react: (seq, emoji) => this.change(client.changes.react(this.conversationId, seq, emoji), 'react'),
      edit: (message) => {
        const text = prompt('Edit your message', message.body.text ?? '')?.trim();
        if (text && text !== message.body.text) this.change(client.changes.edit(message.conversation_id, message.seq, text), 'edit');
      },
      remove: (message) => {
        if (confirm('Delete this message for everyone?')) this.change(client.changes.delete(message.conversation_id, message.seq), 'delete');
      },
    };

    client.addEventListener('conversation', (event) => {
      if (event.detail.id === this.conversationId) this.render();
    });
    client.addEventListener('typing', (event) => {
      if (event.detail.conversationId === this.conversationId) this.renderTyping();
    });
    client.addEventListener('presence', () => this.renderHeader());
    this.scroller.addEventListener('scroll', () => this.maybeLoadOlder());
    this.loadOlderButton.addEventListener('click', () => this.loadOlder());
    this.composer.addEventListener('submit', (event) => {
      event.preventDefault();
      this.sendComposed();
    });
    this.input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.sendComposed();
      }
    });
    this.input.addEventListener('input', () => {
      if (this.conversationId && this.input.value.trim()) client.sendTyping(this.conversationId);
    });
    byId('attach').addEventListener('click', () => this.attachInput.click());
    this.attachInput.addEventListener('change', () => {
      const file = this.attachInput.files?.[0];
      this.attachInput.value = '';
      if (file) this.sendFile(file);
    });
    byId('back-to-inbox').addEventListener('click', onBack);
    byId('add-member').addEventListener('click', () => this.conversationId && onAddMember(this.conversationId));
    document.addEventListener('visibilitychange', () => {
      if (this.conversationId && document.visibilityState === 'visible') client.markRead(this.conversationId);
    });
  }

  /**
   * @param {string} conversationId
   * @param {number} [focusSeq] a message to bring into view (a search hit), paging back to it if needed
   */
  async open(conversationId, focusSeq) {
    if (this.conversationId !== conversationId) {
      this.conversationId = conversationId;
      this.nodes.clear();
      this.list.replaceChildren();
      this.uploadStatus.textContent = '';
      this.input.value = '';
    }
    byId('no-conversation').hidden = true;
    this.pane.hidden = false;
    this.client.setActiveConversation(conversationId);
    this.renderHeader();
    this.renderTyping();
    this.render();
    this.scrollToBottom();
    this.input.focus();
    const state = this.client.conversation(conversationId);
    if (state && !state.loaded) await this.loadOlder();
    if (state && focusSeq !== undefined) await this.showMessage(state, focusSeq);
  }

  /** Pages back until the message is held (a bounded number of pages), then scrolls to it and focuses it. */
  async showMessage(state, seq) {
    for (let page = 0; page < MAX_PAGES_TO_FOUND_MESSAGE && !state.messages.has(seq) && state.hasMoreBefore; page += 1) {
      await this.client.loadOlder(state.id);
    }
    const node = this.list.querySelector(`li[data-seq="${seq}"]`);
    if (!(node instanceof HTMLElement) || this.conversationId !== state.id) return;
    for (const previous of this.list.querySelectorAll('.found')) previous.classList.remove('found');
    node.classList.add('found');
    node.tabIndex = -1;
    node.scrollIntoView({ block: 'center' });
    node.focus({ preventScroll: true });
  }

  close() {
    this.conversationId = null;
    this.client.setActiveConversation(null);
    this.pane.hidden = true;
    byId('no-conversation').hidden = false;
  }

  get state() {
    return this.conversationId ? this.client.conversation(this.conversationId) : undefined;
  }

  renderHeader() {
    const state = this.state;
    if (!state) return;
    byId('conversation-title').textContent = conversationName(state);
    const partner = directPartner(state);
    const presence = partner ? this.client.presenceOf(partner) : undefined;
    const dot = byId('conversation-presence-dot');
    dot.hidden = !partner;
    dot.className = `presence-dot ${presence?.status ?? 'unknown'}`;
    dot.setAttribute('aria-hidden', 'true');
    byId('conversation-presence').textContent = partner ? describePresence(presence) : `${(state.members ?? []).length} members`;
    byId('add-member').hidden = state.kind !== 'group';
  }

  renderTyping() {
    const users = this.conversationId ? this.client.typingUsers(this.conversationId) : [];
    byId('typing-indicator').textContent =
      users.length === 0 ? '' : users.length === 1 ? `${users[0]} is typing…` : `${users.slice(0, -1).join(', ')} and ${users.at(-1)} are typing…`;
  }

  render() {
    const state = this.state;
    if (!state) return;
    this.renderHeader();
    const wasPinned = this.scroller.scrollHeight - this.scroller.scrollTop - this.scroller.clientHeight < PINNED_TO_BOTTOM_PX;
    const firstBefore = this.list.firstElementChild;
    const heightBefore = this.scroller.scrollHeight;
    const topBefore = this.scroller.scrollTop;
    const lastBefore = this.list.lastElementChild;

    const wanted = state.timeline().map((item) => {
      const key = itemKey(item, this.client.me);
      let node = this.nodes.get(key);
      if (!node) {
        node = this.buildMessage(item, key);
        this.nodes.set(key, node);
      }
      this.updateMessage(node, item, state);
      return node;
    });
    const wantedSet = new Set(wanted);
    for (const [key, node] of this.nodes) if (!wantedSet.has(node)) this.nodes.delete(key);
    // Move nodes only where the order changed, so screen readers hear additions, not a re-read of the log.
    let cursor = this.list.firstElementChild;
    for (const node of wanted) {
      if (node === cursor) cursor = cursor.nextElementSibling;
      else this.list.insertBefore(node, cursor);
    }
    while (cursor) {
      const next = cursor.nextElementSibling;
      cursor.remove();
      cursor = next;
    }

    this.loadOlderButton.hidden = !state.hasMoreBefore;
    const prepended = firstBefore && this.list.firstElementChild !== firstBefore && firstBefore.isConnected;
    const newLast = this.list.lastElementChild;
    if (prepended) {
      this.scroller.scrollTop = topBefore + (this.scroller.scrollHeight - heightBefore);
    } else if (wasPinned || (newLast !== lastBefore && newLast?.classList.contains('mine'))) {
      this.scrollToBottom();
    }
    // A window shorter than the screen cannot be scrolled up: keep loading until it fills or history ends.
    const shown = this.scroller.clientHeight > 0;
    if (shown && state.hasMoreBefore && state.loaded && this.scroller.scrollHeight <= this.scroller.clientHeight) this.loadOlder();
  }

  scrollToBottom() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  maybeLoadOlder() {
    if (this.scroller.scrollTop < LOAD_OLDER_THRESHOLD_PX && this.state?.hasMoreBefore) this.loadOlder();
  }

  async loadOlder() {
    const conversationId = this.conversationId;
    if (!conversationId) return;
    try {
      await this.client.loadOlder(conversationId);
    } catch (error) {
      this.uploadStatus.textContent = `Could not load older messages: ${error.message}`;
    }
  }

  sendComposed() {
    const text = this.input.value.trim();
    if (!text || !this.conversationId) return;
    this.client.sendText(this.conversationId, text);
    this.input.value = '';
    this.input.focus();
  }

  /** Waits for a change's ack; the change itself shows when its `message_updated` frame arrives. */
  async change(acknowledged, what) {
    try {
      await acknowledged;
    } catch (error) {
      this.uploadStatus.classList.add('error');
      this.uploadStatus.textContent = `Could not ${what}: ${error.message}`;
    }
  }

  /** @param {File} file */
  async sendFile(file) {
    const conversationId = this.conversationId;
    if (!conversationId) return;
    const status = this.uploadStatus;
    status.classList.remove('error');
    try {
      await this.client.sendMedia(conversationId, file, {
        onStatus: (step) => {
          status.textContent = step === 'uploading' ? `Uploading ${file.name}…` : `Checking ${file.name}…`;
        },
      });
      status.textContent = '';
    } catch (error) {
      status.classList.add('error');
      status.textContent = error instanceof MediaRejectedError
        ? `${file.name} was rejected: ${error.reason ?? 'the scan refused it'}`
        : `Could not send ${file.name}: ${error.message}`;
    }
  }

  /** @param {import('./conversation-state.js').TimelineItem} item */
  buildMessage(item, key) {
    const message = item.kind === 'message' ? item.message : null;
    const body = message ? message.body : item.pending.body;
    const sender = message ? message.sender : this.client.me;
    const mine = sender === this.client.me;
    const node = element(
      'li',
      { className: `message ${mine ? 'mine' : 'theirs'}`, dataset: { key } },
      element('span', { className: 'sender' }, mine ? 'You' : sender),
      element(
        'div',
        { className: 'bubble' },
        body.media_id ? this.buildMedia(body.media_id, sender) : null,
        body.text ? element('p', { className: 'text' }, body.text) : null,
        body.ciphertext ? element('p', { className: 'text encrypted' }, 'Encrypted message') : null,
      ),
      element('span', { className: 'meta' }, element('time', {}), mine ? element('span', { className: 'delivery-state' }) : null),
    );
    return node;
  }

  /** A thumbnail that links to the full image; its signed URLs are fetched when the message is first shown. */
  buildMedia(mediaId, sender) {
    const link = element('a', { className: 'media', target: '_blank', rel: 'noopener' }, element('span', { className: 'media-loading' }, 'Loading photo…'));
    this.client
      .mediaInfo(mediaId)
      .then((info) => {
        if (info.status !== 'ready' || !info.thumbnail_url) {
          link.replaceChildren(element('span', { className: 'media-loading' }, 'Photo unavailable'));
          return;
        }
        link.href = info.url ?? info.thumbnail_url;
        const image = element('img', {
          className: 'thumbnail',
          src: info.thumbnail_url,
          alt: `Photo from ${sender === this.client.me ? 'you' : sender}`,
          width: info.thumbnail?.width,
          height: info.thumbnail?.height,
        });
        link.replaceChildren(image);
      })
      .catch((error) => link.replaceChildren(element('span', { className: 'media-loading' }, `Photo unavailable: ${error.message}`)));
    return link;
  }

  updateMessage(node, item, state) {
    const message = item.kind === 'message' ? item.message : null;
    if (message) {
      node.dataset.seq = String(message.seq);
      renderMessageState(node, message, this.messageActions);
    }
    const time = node.querySelector('time');
    const sentAt = message?.sent_at ?? item.pending?.created_at;
    if (time && sentAt && time.dateTime !== sentAt) {
      time.dateTime = sentAt;
      time.textContent = formatTime(sentAt);
    }
    const stateLabel = node.querySelector('.delivery-state');
    const deliveryState = state.deliveryState(item);
    if (stateLabel && deliveryState && stateLabel.dataset.state !== deliveryState) {
      stateLabel.dataset.state = deliveryState;
      stateLabel.textContent = STATE_LABELS[deliveryState];
    }
    const failed = item.kind === 'pending' && item.pending.state === 'failed';
    let retry = node.querySelector('.retry');
    if (failed && !retry) {
      const clientMsgId = item.pending.client_msg_id;
      retry = element('button', { type: 'button', className: 'retry quiet', onclick: () => this.client.retrySend(state.id, clientMsgId) }, 'Retry');
      node.append(element('span', { className: 'send-error', role: 'alert' }, item.pending.error ?? 'Not sent'), retry);
    } else if (!failed && retry) {
      node.querySelector('.send-error')?.remove();
      retry.remove();
    }
  }
}
