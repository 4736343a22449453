// The inbox: one button per conversation, newest activity first, with presence dot, last message and unread badge.

import { byId, conversationName, describePresence, directPartner, element, formatTime, messagePreview } from './dom.js';

export class InboxView {
  /**
   * @param {import('./natter-client.js').NatterClient} client
   * @param {(conversationId: string) => void} onOpen
   */
  constructor(client, onOpen) {
    this.client = client;
    this.onOpen = onOpen;
    this.list = byId('inbox');
    /** @type {string|null} */
    this.activeId = null;
    client.addEventListener('conversations', () => this.render());
    client.addEventListener('presence', () => this.render());
  }

  setActive(conversationId) {
    this.activeId = conversationId;
    this.render();
  }

  /** Moves focus to a conversation's entry (after going back from it on a narrow screen). */
  focus(conversationId) {
    this.list.querySelector(`[data-conversation-id="${CSS.escape(conversationId)}"]`)?.focus();
  }

  render() {
    const focusedId = document.activeElement instanceof HTMLElement ? document.activeElement.dataset.conversationId : undefined;
    const items = this.client.conversationList().map((state) => this.item(state));
    if (items.length === 0) {
      items.push(element('li', { className: 'placeholder' }, 'No chats yet. Start one with “New chat”.'));
    }
    this.list.replaceChildren(...items);
    if (focusedId) this.focus(focusedId);
  }

  /** @param {import('./natter-client.js').ConversationState} state */
  item(state) {
    const name = conversationName(state);
    const partner = directPartner(state);
    const presence = partner ? this.client.presenceOf(partner) : undefined;
    const last = state.lastMessage;
    const preview = last ? `${last.sender === this.client.me ? 'You' : last.sender}: ${messagePreview(last)}` : 'No messages yet';
    const unreadLabel = state.unread === 1 ? '1 unread message' : `${state.unread} unread messages`;
    const presenceText = describePresence(presence);
    const button = element(
      'button',
      {
        type: 'button',
        className: 'inbox-item',
        dataset: { conversationId: state.id },
        'aria-current': state.id === this.activeId ? 'true' : undefined,
        onclick: () => this.onOpen(state.id),
      },
      partner
        ? element('span', { className: `presence-dot ${presence?.status ?? 'unknown'}`, role: 'img', 'aria-label': presenceText ? `${partner} is ${presenceText}` : `${partner}'s presence is unknown` })
        : element('span', { className: 'group-mark', 'aria-hidden': 'true' }, '#'),
      element(
        'span',
        { className: 'inbox-text' },
        element('span', { className: 'inbox-name' }, name),
        element('span', { className: 'inbox-preview' }, preview),
      ),
      element(
        'span',
        { className: 'inbox-meta' },
        last ? element('time', { datetime: last.sent_at }, formatTime(last.sent_at)) : null,
        state.unread > 0 ? element('span', { className: 'unread-badge', 'aria-hidden': 'true' }, String(state.unread)) : null,
        state.unread > 0 ? element('span', { className: 'visually-hidden' }, unreadLabel) : null,
      ),
    );
    return element('li', {}, button);
  }
}
