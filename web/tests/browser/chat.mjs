// Browser test of the web client: alice (desktop) and bob (phone-sized) chat in two Chromium contexts — messages, typing, receipts, presence, images, search, groups, history, edits/reactions/deletes, and a gateway restart.
// Run by e2e/tests/e2e/web_client.rs, which starts the servers, passes NATTER_URL and answers `natter-test:` requests.

import { EICAR, askTestHarness, eventually, launchBrowser, pngImage, runSteps } from './harness.mjs';

const baseUrl = process.env.NATTER_URL;
if (!baseUrl) throw new Error('NATTER_URL (the gateway under test) is not set');

const browser = await launchBrowser();
const newPage = async (viewport) => (await browser.newContext({ viewport })).newPage();
const alice = await newPage({ width: 1100, height: 760 });
const bob = await newPage({ width: 390, height: 760 });

/** @param {import('playwright-core').Page} page */
const message = (page, text) => page.locator('li.message', { hasText: text });
const stateOf = (page, text) => message(page, text).locator('.delivery-state');
const inboxItem = (page, name) => page.locator('.inbox-item', { has: page.locator('.inbox-name', { hasText: new RegExp(`^${name}$`) }) });
const connectionState = (page, state) => page.locator(`#connection-status[data-state="${state}"]`);

async function signIn(page, user) {
  await page.goto(baseUrl);
  await page.locator('#sign-in').getByLabel('User name').fill(user);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await connectionState(page, 'online').waitFor();
}

async function send(page, text) {
  await page.getByLabel('Message', { exact: true }).fill(text);
  await page.getByLabel('Message', { exact: true }).press('Enter');
}

/** On the phone-sized page the inbox and a conversation are never shown together. */
async function openFromInbox(page, name) {
  const back = page.getByRole('button', { name: 'Back to chats' });
  if (await back.isVisible()) await back.click();
  await inboxItem(page, name).click();
  await page.locator('#conversation-title', { hasText: name }).waitFor();
}

/** The seqs and texts a page renders for the open conversation, in order. */
const renderedMessages = (page) =>
  page.locator('li.message').evaluateAll((items) => items.map((item) => ({ seq: Number(item.dataset.seq), text: item.querySelector('.text')?.textContent ?? '' })));

async function createGroupViaApi(page, title, members) {
  return page.evaluate(async ({ title, members }) => {
    const token = localStorage.getItem('natter.token');
    const response = await fetch('/v1/conversations', {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ kind: 'group', title, members }),
    });
    return (await response.json()).id;
  }, { title, members });
}

/** Sends over HTTP as the page's user from another "device" (`http`), as a phone would while the browser is away. */
async function postViaApi(page, conversationId, clientMsgId, text) {
  return page.evaluate(async ({ conversationId, clientMsgId, text }) => {
    const token = localStorage.getItem('natter.token');
    const response = await fetch('/v1/messages?device=phone', {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ conversation_id: conversationId, client_msg_id: clientMsgId, body: { text } }),
    });
    if (!response.ok) throw new Error(`POST /v1/messages: ${response.status} ${await response.text()}`);
  }, { conversationId, clientMsgId, text });
}

let directId = '';
const HISTORY_LENGTH = 45;
/** One early history line has a word of its own, so a search finds it far above the latest page. */
const historyLine = (number) => (number === 7 ? 'history line 7 mentions the lighthouse' : `history line ${number}`);

const passed = await runSteps({ alice, bob }, [
  ['alice signs in with a dev user name', () => signIn(alice, 'alice')],
  ['alice starts a direct chat with bob and sends', async () => {
    await alice.getByRole('button', { name: 'New chat' }).click();
    await alice.getByLabel('People').fill('bob');
    await alice.getByRole('button', { name: 'Start' }).click();
    await alice.locator('#conversation-title', { hasText: 'bob' }).waitFor();
    directId = await alice.locator('.inbox-item[aria-current="true"]').getAttribute('data-conversation-id');
    await askTestHarness(`direct-conversation ${directId}`);
    await send(alice, 'Hi Bob! First message.');
    await stateOf(alice, 'Hi Bob! First message.').filter({ hasText: /^Sent$/ }).waitFor();
  }],
  ['bob signs in: the chat is in his inbox with an unread badge and the last message', async () => {
    await signIn(bob, 'bob');
    const item = inboxItem(bob, 'alice');
    await item.locator('.unread-badge', { hasText: /^1$/ }).waitFor();
    await item.locator('.inbox-preview', { hasText: 'alice: Hi Bob! First message.' }).waitFor();
  }],
  ['alice sees bob online and her message delivered to his device', async () => {
    await alice.locator('#conversation-presence', { hasText: /^online$/ }).waitFor();
    await stateOf(alice, 'Hi Bob! First message.').filter({ hasText: /^Delivered$/ }).waitFor();
  }],
  ['bob opens the chat: alice sees it read, his badge is gone, alice is online for him', async () => {
    await openFromInbox(bob, 'alice');
    await message(bob, 'Hi Bob! First message.').waitFor();
    await stateOf(alice, 'Hi Bob! First message.').filter({ hasText: /^Read$/ }).waitFor();
    await bob.locator('#conversation-presence', { hasText: /^online$/ }).waitFor();
    await bob.getByRole('button', { name: 'Back to chats' }).click();
    await inboxItem(bob, 'alice').locator('.unread-badge').waitFor({ state: 'detached' });
    await inboxItem(bob, 'alice').click();
  }],
  ['alice sees bob typing, then his reply', async () => {
    await bob.getByLabel('Message', { exact: true }).pressSequentially('The quarterly', { delay: 20 });
    await alice.locator('#typing-indicator', { hasText: 'bob is typing…' }).waitFor();
    await bob.getByLabel('Message', { exact: true }).pressSequentially(' budget review moved to Thursday');
    await bob.getByLabel('Message', { exact: true }).press('Enter');
    await message(alice, 'The quarterly budget review moved to Thursday').waitFor();
    await eventually('the typing indicator is gone', async () => (await alice.locator('#typing-indicator').textContent()) === '');
    await stateOf(bob, 'The quarterly budget review moved to Thursday').filter({ hasText: /^Read$/ }).waitFor();
  }],
  ['alice sends an image: both see its thumbnail', async () => {
    await alice.locator('#attach-input').setInputFiles({ name: 'sunset.png', mimeType: 'image/png', buffer: pngImage(640, 480) });
    for (const page of [alice, bob]) {
      const width = await eventually('the thumbnail has loaded', () =>
        page.locator('img.thumbnail').evaluateAll((images) => images.find((image) => image.complete && image.naturalWidth > 0)?.naturalWidth));
      if (width !== 320) throw new Error(`the thumbnail is ${width} px wide, expected 320 (the long side)`);
    }
    await bob.getByRole('img', { name: 'Photo from alice' }).waitFor();
  }],
  ['an infected upload is rejected and nothing is sent', async () => {
    const before = await alice.locator('li.message').count();
    await alice.locator('#attach-input').setInputFiles({ name: 'invoice.txt', mimeType: 'text/plain', buffer: EICAR });
    await alice.locator('#upload-status', { hasText: /invoice\.txt was rejected: .*eicar/i }).waitFor();
    const after = await alice.locator('li.message').count();
    if (after !== before) throw new Error(`a rejected upload changed the message count from ${before} to ${after}`);
  }],
  ['alice searches and sees the hit highlighted, then opens it', async () => {
    const highlighted = alice.locator('.search-hit mark', { hasText: /^budget$/i });
    // Indexing follows the log asynchronously: search again until the hit is there.
    await eventually('a highlighted search hit for "budget"', async () => {
      await alice.getByLabel('Search messages').fill('budget');
      await alice.getByRole('button', { name: 'Search', exact: true }).click();
      await alice.locator('#search-status', { hasText: /found|Nothing|failed/ }).waitFor({ timeout: 5000 });
      return (await highlighted.count()) > 0;
    });
    await alice.locator('.search-hit', { hasText: 'The quarterly budget review' }).click();
    await alice.locator('#conversation-title', { hasText: 'bob' }).waitFor();
    await alice.locator('li.message.found', { hasText: 'The quarterly budget review' }).waitFor();
  }],
  ['alice creates a group with bob and adds carol; bob gets the message', async () => {
    await alice.getByRole('button', { name: 'New chat' }).click();
    await alice.getByLabel('Group', { exact: true }).check();
    await alice.getByLabel('People').fill('bob');
    await alice.getByLabel('Group name').fill('Weekend trip');
    await alice.getByRole('button', { name: 'Start' }).click();
    await alice.locator('#conversation-title', { hasText: 'Weekend trip' }).waitFor();
    await alice.getByRole('button', { name: 'Add member' }).click();
    await alice.locator('#add-member-dialog').getByLabel('User name').fill('carol');
    await alice.getByRole('button', { name: 'Add', exact: true }).click();
    await alice.locator('#conversation-presence', { hasText: '3 members' }).waitFor();
    await send(alice, 'Who brings the tent?');
    await bob.getByRole('button', { name: 'Back to chats' }).click();
    await inboxItem(bob, 'Weekend trip').locator('.unread-badge', { hasText: /^1$/ }).waitFor();
    await openFromInbox(bob, 'Weekend trip');
    await message(bob, 'Who brings the tent?').waitFor();
  }],
  ['history loads as bob scrolls up', async () => {
    const historyId = await createGroupViaApi(alice, 'Long history', ['bob']);
    for (let number = 1; number <= HISTORY_LENGTH; number += 1) await postViaApi(alice, historyId, `history-${number}`, historyLine(number));
    await openFromInbox(bob, 'Long history');
    await message(bob, historyLine(HISTORY_LENGTH)).waitFor();
    await eventually('the first message has paged in', async () => {
      await bob.locator('#message-scroller').evaluate((scroller) => scroller.scrollTo(0, 0));
      return (await bob.locator('li.message .text', { hasText: /^history line 1$/ }).count()) === 1;
    });
    const rendered = await renderedMessages(bob);
    const expected = Array.from({ length: HISTORY_LENGTH }, (_, index) => ({ seq: index + 1, text: historyLine(index + 1) }));
    if (JSON.stringify(rendered) !== JSON.stringify(expected)) throw new Error(`history renders ${JSON.stringify(rendered)}`);
  }],
  ['after a reload (still signed in), a search hit far back in a chat pages back to its message', async () => {
    // A fresh page holds no messages of the long chat: the hit (seq 7) is older than its latest page.
    await alice.reload();
    await connectionState(alice, 'online').waitFor();
    await eventually('a hit for "lighthouse"', async () => {
      await alice.getByLabel('Search messages').fill('lighthouse');
      await alice.getByRole('button', { name: 'Search', exact: true }).click();
      await alice.locator('#search-status', { hasText: /found|Nothing|failed/ }).waitFor({ timeout: 5000 });
      return (await alice.locator('.search-hit mark', { hasText: /^lighthouse$/ }).count()) > 0;
    });
    await alice.locator('.search-hit', { hasText: 'lighthouse' }).click();
    await alice.locator('#conversation-title', { hasText: 'Long history' }).waitFor();
    const found = alice.locator('li.message.found', { hasText: 'lighthouse' });
    await found.waitFor();
    if ((await found.getAttribute('data-seq')) !== '7') throw new Error('the found message is not seq 7');
    if (!(await found.evaluate((node) => node === document.activeElement))) throw new Error('the found message does not have focus');
  }],
  ['carol signs in by pasting a token and finds the group she was added to', async () => {
    const response = await fetch(new URL('/v1/dev/token', baseUrl), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user: 'carol' }) });
    const { token } = await response.json();
    const carol = await newPage({ width: 800, height: 700 });
    await carol.goto(baseUrl);
    await carol.getByText('Sign in with a token').click();
    await carol.getByLabel('Token').fill(token);
    await carol.getByRole('button', { name: 'Use this token' }).click();
    await connectionState(carol, 'online').waitFor();
    await carol.locator('#signed-in-as', { hasText: 'Signed in as carol' }).waitFor();
    await inboxItem(carol, 'Weekend trip').locator('.unread-badge', { hasText: /^1$/ }).waitFor();
    await carol.context().close();
  }],
  ['alice edits, reacts and deletes; bob sees the edited text, the reaction count and the tombstone, also after a reload', async () => {
    // A group of their own: its log gets holes (changes have seqs), which the direct chat's gapless checks below must not see.
    const plansId = await createGroupViaApi(alice, 'Plans', ['bob']);
    await postViaApi(alice, plansId, 'plans-1', 'Dinner at eight?');
    await openFromInbox(alice, 'Plans');
    await openFromInbox(bob, 'Plans');
    await message(bob, 'Dinner at eight?').waitFor();

    alice.once('dialog', (dialog) => dialog.accept('Dinner at seven?'));
    await message(alice, 'Dinner at eight?').getByRole('button', { name: 'Edit message' }).click();
    const edited = message(bob, 'Dinner at seven?');
    await edited.locator('.edited', { hasText: '(edited)' }).waitFor();
    await message(alice, 'Dinner at seven?').locator('.edited').waitFor();

    await edited.getByRole('button', { name: 'React with 👍' }).click();
    const aliceChip = message(alice, 'Dinner at seven?').locator('button.reaction');
    await aliceChip.filter({ hasText: /^👍 1$/ }).waitFor();
    if ((await aliceChip.getAttribute('aria-pressed')) !== 'false') throw new Error('alice\'s chip says she reacted before she did');
    await aliceChip.click();
    for (const page of [alice, bob]) await message(page, 'Dinner at seven?').locator('button.reaction.mine[aria-pressed="true"]', { hasText: /^👍 2$/ }).waitFor();

    await send(alice, 'Actually, let us skip it');
    await message(bob, 'Actually, let us skip it').waitFor();
    alice.once('dialog', (dialog) => dialog.accept());
    await message(alice, 'Actually, let us skip it').getByRole('button', { name: 'Delete message' }).click();
    for (const page of [alice, bob]) {
      await eventually('the deleted text is gone', async () => (await message(page, 'Actually, let us skip it').count()) === 0);
      await page.locator('li.message.deleted .tombstone', { hasText: /^message deleted$/ }).waitFor();
    }

    // The HTTP twin (the library's HttpApi, as another app would use it) against the real server.
    const reply = await bob.evaluate(async (conversationId) => {
      const { HttpApi } = await import('/web/http-api.js');
      const api = new HttpApi({ baseUrl: location.origin, token: localStorage.getItem('natter.token'), deviceId: 'phone' });
      return api.react(conversationId, 1, 'http-react-1', '🎉');
    }, plansId);
    if (reply.seq !== 7 || reply.duplicate) throw new Error(`the reaction over HTTP answered ${JSON.stringify(reply)}`);
    await message(alice, 'Dinner at seven?').locator('button.reaction', { hasText: /^🎉 1$/ }).waitFor();

    // A fresh page reads history, which skips the changes' seqs: the same state, nothing missing, no holes shown.
    await bob.reload();
    await connectionState(bob, 'online').waitFor();
    await openFromInbox(bob, 'Plans');
    await message(bob, 'Dinner at seven?').locator('.edited').waitFor();
    await message(bob, 'Dinner at seven?').locator('button.reaction', { hasText: /^👍 2$/ }).waitFor();
    await message(bob, 'Dinner at seven?').locator('button.reaction.mine', { hasText: /^🎉 1$/ }).waitFor();
    await bob.locator('li.message.deleted .tombstone').waitFor();
    const rendered = await renderedMessages(bob);
    const expected = [{ seq: 1, text: 'Dinner at seven?' }, { seq: 5, text: 'message deleted' }];
    if (JSON.stringify(rendered) !== JSON.stringify(expected)) throw new Error(`after a reload bob sees ${JSON.stringify(rendered)}`);
  }],
  ['the gateway restarts: an offline send and a message from elsewhere arrive once, in order', async () => {
    await openFromInbox(bob, 'alice');
    await openFromInbox(alice, 'bob');
    await askTestHarness('stop-gateway');
    await connectionState(alice, 'offline').waitFor();
    await connectionState(bob, 'offline').waitFor();
    await send(alice, 'written while the gateway was down');
    await stateOf(alice, 'written while the gateway was down').filter({ hasText: /^Sending…$/ }).waitFor();
    await askTestHarness('start-gateway');
    await postViaApi(bob, directId, 'from-the-phone', 'sent from my phone during the restart');
    for (const page of [alice, bob]) {
      await connectionState(page, 'online').waitFor({ timeout: 30_000 });
      await message(page, 'written while the gateway was down').waitFor();
      await message(page, 'sent from my phone during the restart').waitFor();
    }
    await stateOf(alice, 'written while the gateway was down').filter({ hasText: /^(Delivered|Read)$/ }).waitFor();
    const seen = await Promise.all([alice, bob].map(renderedMessages));
    for (const [index, messages] of seen.entries()) {
      const seqs = messages.map((item) => item.seq);
      if (seqs.some((seq, position) => seq !== position + 1)) throw new Error(`page ${index} shows seqs ${seqs.join(',')}: not each once, in order`);
    }
    if (JSON.stringify(seen[0]) !== JSON.stringify(seen[1])) throw new Error(`alice and bob see different chats: ${JSON.stringify(seen)}`);
  }],
  ['bob signs out: alice sees him offline with a last-seen time', async () => {
    await bob.getByRole('button', { name: 'Sign out' }).click();
    await bob.locator('#sign-in').getByLabel('User name').waitFor();
    await alice.locator('#conversation-presence', { hasText: /^last seen / }).waitFor();
    await inboxItem(alice, 'bob').locator('.presence-dot.offline').waitFor();
  }],
]);

await browser.close();
process.exit(passed ? 0 : 1);
