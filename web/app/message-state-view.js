// How a message's edits, deletes and reactions show: "(edited)", an italic "message deleted" tombstone, reaction chips that toggle mine, and the edit / delete / 👍 actions.

import { element } from './dom.js';

/** The one-click reaction every message offers. */
export const QUICK_REACTION = '👍';

/**
 * @typedef {{me: string, react: (seq: number, emoji: string) => void, edit: (message: import('./http-api.js').Message) => void,
 *   remove: (message: import('./http-api.js').Message) => void}} MessageActions
 */

/**
 * Brings a logged message's element (built by ConversationView: sender, bubble, meta) up to the message's
 * state. Keyed by `revision`, so re-rendering the timeline touches only messages that changed.
 * @param {HTMLElement} node
 * @param {import('./http-api.js').Message} message
 * @param {MessageActions} actions
 */
export function renderMessageState(node, message, actions) {
  const revision = String(message.revision ?? 0);
  if (node.dataset.revision === revision) return;
  node.dataset.revision = revision;
  const bubble = node.querySelector('.bubble');
  const meta = node.querySelector('.meta');
  if (!bubble || !meta) return;
  // The chips and actions are rebuilt; a keyboard user's focus stays on the same one.
  const focused = document.activeElement instanceof HTMLElement && node.contains(document.activeElement) ? document.activeElement.dataset.focusKey : undefined;
  node.querySelector('.reactions')?.remove();
  node.querySelector('.message-actions')?.remove();
  if (message.deleted) {
    // A tombstone keeps its place in the conversation and says nothing of what was there.
    node.classList.add('deleted');
    bubble.replaceChildren(element('p', { className: 'text tombstone' }, 'message deleted'));
    meta.querySelector('.edited')?.remove();
    return;
  }
  if (message.edited_at && message.body.text !== undefined) {
    const text = bubble.querySelector('.text:not(.encrypted)');
    if (text) text.textContent = message.body.text;
    else bubble.append(element('p', { className: 'text' }, message.body.text));
    if (!meta.querySelector('.edited')) meta.querySelector('time')?.after(element('span', { className: 'edited' }, '(edited)'));
  }
  const reactions = message.reactions ?? [];
  if (reactions.length > 0) bubble.after(element('div', { className: 'reactions' }, ...reactions.map((reaction) => reactionChip(message, reaction, actions))));
  node.append(messageActions(message, actions));
  if (focused) node.querySelector(`[data-focus-key="${CSS.escape(focused)}"]`)?.focus();
}

/** "👍 2", pressed when I am one of them; a click adds or removes mine. */
function reactionChip(message, { emoji, count, me }, actions) {
  const people = count === 1 ? '1 reaction' : `${count} reactions`;
  return element(
    'button',
    {
      type: 'button',
      className: `reaction${me ? ' mine' : ''}`,
      dataset: { focusKey: `reaction ${emoji}` },
      'aria-pressed': me ? 'true' : 'false',
      'aria-label': `${emoji} ${people}${me ? ', including yours: remove yours' : ': add yours'}`,
      onclick: () => actions.react(message.seq, emoji),
    },
    `${emoji} ${count}`,
  );
}

/** 👍 on any message; Edit and Delete on my own (the server allows only the sender to edit). */
function messageActions(message, actions) {
  const mine = message.sender === actions.me;
  const quiet = (label, text, onclick) => element('button', { type: 'button', className: 'quiet', 'aria-label': label, dataset: { focusKey: label }, onclick }, text);
  return element(
    'span',
    { className: 'message-actions' },
    quiet(`React with ${QUICK_REACTION}`, QUICK_REACTION, () => actions.react(message.seq, QUICK_REACTION)),
    // Encrypted messages are edited with ciphertext, which this app does not write.
    mine && !message.body.ciphertext ? quiet('Edit message', 'Edit', () => actions.edit(message)) : null,
    mine ? quiet('Delete message', 'Delete', () => actions.remove(message)) : null,
  );
}
