// The dialogs that start a direct chat, create a group, and add a member to a group.

import { byId } from './dom.js';

/** @param {string} text @returns {string[]} */
function userNames(text) {
  return [...new Set(text.split(/[\s,]+/).map((name) => name.trim()).filter(Boolean))];
}

export class ConversationDialogs {
  /**
   * @param {import('./natter-client.js').NatterClient} client
   * @param {(conversationId: string) => void} onOpen
   */
  constructor(client, onOpen) {
    this.client = client;
    this.onOpen = onOpen;
    this.newDialog = /** @type {HTMLDialogElement} */ (byId('new-conversation-dialog'));
    this.newForm = /** @type {HTMLFormElement} */ (byId('new-conversation-form'));
    this.addDialog = /** @type {HTMLDialogElement} */ (byId('add-member-dialog'));
    this.addForm = /** @type {HTMLFormElement} */ (byId('add-member-form'));
    /** @type {string|null} */
    this.addingTo = null;

    byId('new-conversation').addEventListener('click', () => this.openNew());
    byId('cancel-new-conversation').addEventListener('click', () => this.newDialog.close());
    byId('cancel-add-member').addEventListener('click', () => this.addDialog.close());
    this.newForm.addEventListener('change', () => this.showGroupFields());
    this.newForm.addEventListener('submit', (event) => {
      event.preventDefault();
      this.createConversation();
    });
    this.addForm.addEventListener('submit', (event) => {
      event.preventDefault();
      this.addMember();
    });
  }

  get kind() {
    return /** @type {'direct'|'group'} */ (new FormData(this.newForm).get('kind'));
  }

  openNew() {
    this.newForm.reset();
    byId('new-conversation-error').textContent = '';
    this.showGroupFields();
    this.newDialog.showModal();
    byId('new-members').focus();
  }

  showGroupFields() {
    byId('new-title-field').hidden = this.kind !== 'group';
  }

  async createConversation() {
    const error = byId('new-conversation-error');
    const members = userNames(/** @type {HTMLInputElement} */ (byId('new-members')).value).filter((user) => user !== this.client.me);
    error.textContent = '';
    try {
      let state;
      if (this.kind === 'direct') {
        if (members.length !== 1) {
          error.textContent = 'A direct chat is with exactly one other person.';
          return;
        }
        state = await this.client.openDirect(members[0]);
      } else {
        const title = /** @type {HTMLInputElement} */ (byId('new-title')).value.trim();
        state = await this.client.createGroup(title || members.join(', '), members);
      }
      this.newDialog.close();
      this.onOpen(state.id);
    } catch (failure) {
      error.textContent = `Could not start the chat: ${failure.message}`;
    }
  }

  /** @param {string} conversationId */
  openAddMember(conversationId) {
    this.addingTo = conversationId;
    this.addForm.reset();
    byId('add-member-error').textContent = '';
    this.addDialog.showModal();
    byId('add-member-user').focus();
  }

  async addMember() {
    const error = byId('add-member-error');
    const user = /** @type {HTMLInputElement} */ (byId('add-member-user')).value.trim();
    if (!this.addingTo || !user) return;
    try {
      await this.client.addMember(this.addingTo, user);
      this.addDialog.close();
      /** @type {HTMLElement} */ (document.getElementById('composer-input'))?.focus();
    } catch (failure) {
      error.textContent = `Could not add ${user}: ${failure.message}`;
    }
  }
}
