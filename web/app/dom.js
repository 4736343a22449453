// Small DOM and formatting helpers shared by the web client's views; nothing here knows the protocol.

/**
 * Creates an element; attributes starting with `on` become listeners, `dataset`/`hidden` are set as properties.
 * @param {string} tag
 * @param {Record<string, unknown>} [attributes]
 * @param {...(Node|string|null|undefined|false)} children
 * @returns {HTMLElement}
 */
export function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') node.addEventListener(name.slice(2), value);
    else if (name === 'dataset') Object.assign(node.dataset, value);
    else if (name === 'className') node.className = String(value);
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children) if (child !== null && child !== undefined && child !== false) node.append(child);
  return node;
}

/** @param {string} id */
export function byId(id) {
  const node = document.getElementById(id);
  if (!node) throw new Error(`the page has no #${id}`);
  return node;
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

/** Today's times as 14:05, older ones with their date. @param {string} iso */
export function formatTime(iso) {
  const date = new Date(iso);
  return date.toDateString() === new Date().toDateString() ? timeFormat.format(date) : dateTimeFormat.format(date);
}

/** @param {{status: string, lastSeen: string|null}|undefined} presence */
export function describePresence(presence) {
  if (!presence) return '';
  if (presence.status === 'online') return 'online';
  return presence.lastSeen ? `last seen ${formatTime(presence.lastSeen)}` : 'offline';
}

/**
 * A conversation's display name: its title, or for a direct chat the other person.
 * @param {import('./natter-client.js').ConversationState} state
 */
export function conversationName(state) {
  if (state.title) return state.title;
  const others = state.others();
  if (others.length > 0) return others.join(', ');
  return state.kind === 'direct' ? 'Direct chat' : 'Group';
}

/** The person whose presence a conversation shows: the other member of a direct chat. */
export function directPartner(state) {
  return state.kind === 'direct' ? state.others()[0] ?? null : null;
}

/** A one-line preview of a message as it now stands. @param {import('./http-api.js').Message} message */
export function messagePreview(message) {
  return message.deleted ? 'Message deleted' : bodyPreview(message.body);
}

/** A one-line preview of a message body. @param {import('./http-api.js').MessageBody} body */
export function bodyPreview(body) {
  if (body.ciphertext) return 'Encrypted message';
  if (body.media_id) return body.text ? `Photo: ${body.text}` : 'Photo';
  return body.text ?? '';
}

/**
 * A search highlight (server HTML: escaped text, matches in `<b>`) as safe DOM: only text survives, and
 * the matches become `<mark>`. Parsing into an inert document runs nothing the string might hold.
 * @param {string} html
 * @returns {DocumentFragment}
 */
export function highlightFragment(html) {
  const parsed = new DOMParser().parseFromString(`<body>${html}</body>`, 'text/html');
  const fragment = document.createDocumentFragment();
  const walk = (node, insideMatch) => {
    for (const child of node.childNodes) {
      if (child.nodeType === Node.TEXT_NODE) {
        fragment.append(insideMatch ? element('mark', {}, child.textContent ?? '') : document.createTextNode(child.textContent ?? ''));
      } else if (child.nodeType === Node.ELEMENT_NODE) {
        walk(child, insideMatch || child.nodeName === 'B');
      }
    }
  };
  walk(parsed.body, false);
  return fragment;
}
