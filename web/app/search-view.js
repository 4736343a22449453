// Message search: the query box, hits with their highlighted matches, and opening a hit's conversation.

import { byId, conversationName, element, formatTime, highlightFragment } from './dom.js';

export class SearchView {
  /**
   * @param {import('./natter-client.js').NatterClient} client
   * @param {(conversationId: string, focusSeq?: number) => void} onOpen
   */
  constructor(client, onOpen) {
    this.client = client;
    this.onOpen = onOpen;
    this.results = byId('search-results');
    this.status = byId('search-status');
    this.hits = byId('search-hits');
    this.input = /** @type {HTMLInputElement} */ (byId('search-input'));
    /** Answers to older queries that arrive late are dropped. */
    this.queryNumber = 0;
    byId('search-form').addEventListener('submit', (event) => {
      event.preventDefault();
      this.search(this.input.value.trim());
    });
    byId('close-search').addEventListener('click', () => this.close());
    this.results.addEventListener('keydown', (event) => {
      if (event.key === 'Escape') this.close();
    });
  }

  close() {
    this.results.hidden = true;
    this.hits.replaceChildren();
    this.input.focus();
  }

  /** @param {string} q */
  async search(q) {
    if (!q) return;
    const number = ++this.queryNumber;
    this.results.hidden = false;
    this.status.textContent = 'Searching…';
    this.hits.replaceChildren();
    try {
      const { hits } = await this.client.search(q, { limit: 20 });
      if (number !== this.queryNumber) return;
      this.status.textContent = hits.length === 0 ? `Nothing found for “${q}”.` : `${hits.length === 1 ? '1 message' : `${hits.length} messages`} found for “${q}”.`;
      this.hits.replaceChildren(...hits.map((hit) => this.hitItem(hit)));
    } catch (error) {
      if (number !== this.queryNumber) return;
      this.status.textContent = `Search failed: ${error.message}`;
    }
  }

  /** @param {import('./http-api.js').SearchHit} hit */
  hitItem(hit) {
    const { message } = hit;
    const state = this.client.conversation(message.conversation_id);
    const sender = message.sender === this.client.me ? 'You' : message.sender;
    // A direct chat is named after the other person, who is usually the sender: say it once.
    const where = state?.kind === 'direct' ? sender : `${sender} in ${state ? conversationName(state) : message.conversation_id}`;
    return element(
      'li',
      {},
      element(
        'button',
        { type: 'button', className: 'search-hit', onclick: () => this.onOpen(message.conversation_id, message.seq) },
        element(
          'span',
          { className: 'search-hit-meta' },
          `${where} · `,
          element('time', { datetime: message.sent_at }, formatTime(message.sent_at)),
        ),
        element('span', { className: 'search-hit-text' }, highlightFragment(hit.highlight)),
      ),
    );
  }
}
