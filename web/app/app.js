// The web client's entry point: signs in, starts the protocol client, and wires the inbox, conversation, dialogs and search together.

import { NatterApiError, NatterClient } from './natter-client.js';
import { forgetSession, savedSession, signIn } from './sign-in.js';
import { byId } from './dom.js';
import { InboxView } from './inbox-view.js';
import { ConversationView } from './conversation-view.js';
import { ConversationDialogs } from './new-conversation.js';
import { SearchView } from './search-view.js';

const CONNECTION_LABELS = {
  connecting: 'Connecting…',
  syncing: 'Catching up…',
  online: 'Online',
  offline: 'Offline, reconnecting…',
  stopped: 'Signed out',
};

/** @param {import('./sign-in.js').Session} session */
async function startApp(session) {
  const client = new NatterClient({ baseUrl: location.origin, token: session.token, deviceId: session.deviceId });
  const app = byId('app');
  app.hidden = false;
  byId('signed-in-as').textContent = `Signed in as ${session.user}`;

  const status = byId('connection-status');
  client.addEventListener('connection', (event) => {
    const { state } = event.detail;
    status.textContent = CONNECTION_LABELS[state] ?? state;
    status.dataset.state = state;
  });
  client.addEventListener('problem', (event) => console.warn('natter:', event.detail.message));

  const openConversation = (conversationId, focusSeq) => {
    inbox.setActive(conversationId);
    app.classList.add('showing-conversation');
    conversation.open(conversationId, focusSeq);
  };
  const inbox = new InboxView(client, openConversation);
  const dialogs = new ConversationDialogs(client, openConversation);
  const conversation = new ConversationView(client, {
    onBack: () => {
      const leaving = conversation.conversationId;
      conversation.close();
      inbox.setActive(null);
      app.classList.remove('showing-conversation');
      if (leaving) inbox.focus(leaving);
    },
    onAddMember: (conversationId) => dialogs.openAddMember(conversationId),
  });
  new SearchView(client, openConversation);

  const signOut = (problem) => {
    client.stop();
    forgetSession();
    app.hidden = true;
    app.classList.remove('showing-conversation');
    // A fresh page gives the next person a fresh client; sign-in saved their session.
    signIn(problem).then(() => location.reload());
  };
  byId('sign-out').addEventListener('click', () => signOut(''), { once: true });
  client.addEventListener('auth-failed', () => signOut('Your sign-in has expired or was refused: sign in again.'), { once: true });

  status.textContent = CONNECTION_LABELS.connecting;
  for (let attempt = 0; ; attempt += 1) {
    try {
      await client.start();
      break;
    } catch (error) {
      if (error instanceof NatterApiError && error.code === 'unauthorized') {
        signOut('Your sign-in has expired or was refused: sign in again.');
        return;
      }
      status.textContent = `Cannot reach the server (${error.message}); retrying…`;
      await new Promise((resolve) => setTimeout(resolve, Math.min(10_000, 500 * 2 ** attempt)));
    }
  }
  inbox.render();
}

const session = savedSession() ?? (await signIn());
await startApp(session);
