// Sign-in for the web client: a dev-mode user name or a pasted token, kept in localStorage with this browser's stable device id.

import { NatterApiError, randomId, requestDevToken, userOfToken } from './natter-client.js';
import { byId } from './dom.js';

const TOKEN_KEY = 'natter.token';
const DEVICE_KEY = 'natter.device';

/** @typedef {{token: string, user: string, deviceId: string}} Session */

/** This browser's device id: chosen once, kept, so the server can resume it. */
function deviceId() {
  let id = localStorage.getItem(DEVICE_KEY);
  if (!id) {
    id = `web-${randomId()}`;
    localStorage.setItem(DEVICE_KEY, id);
  }
  return id;
}

/** @returns {Session|null} */
export function savedSession() {
  const token = localStorage.getItem(TOKEN_KEY);
  if (!token) return null;
  try {
    return { token, user: userOfToken(token), deviceId: deviceId() };
  } catch {
    localStorage.removeItem(TOKEN_KEY);
    return null;
  }
}

export function forgetSession() {
  localStorage.removeItem(TOKEN_KEY);
}

/**
 * Shows the sign-in screen until the person signs in.
 * @param {string} [problem] shown first, e.g. why they were signed out
 * @returns {Promise<Session>}
 */
export function signIn(problem = '') {
  const screen = byId('sign-in');
  const error = byId('sign-in-error');
  const devForm = /** @type {HTMLFormElement} */ (byId('dev-sign-in'));
  const tokenForm = /** @type {HTMLFormElement} */ (byId('token-sign-in'));
  screen.hidden = false;
  error.textContent = problem;
  byId('user-name').focus();
  return new Promise((resolve) => {
    const finish = (token) => {
      const session = { token, user: userOfToken(token), deviceId: deviceId() };
      localStorage.setItem(TOKEN_KEY, token);
      devForm.removeEventListener('submit', onDevSubmit);
      tokenForm.removeEventListener('submit', onTokenSubmit);
      screen.hidden = true;
      resolve(session);
    };
    const onDevSubmit = async (event) => {
      event.preventDefault();
      const user = /** @type {HTMLInputElement} */ (byId('user-name')).value.trim();
      error.textContent = '';
      try {
        finish(await requestDevToken(location.origin, user));
      } catch (failure) {
        error.textContent = failure instanceof NatterApiError && failure.code === 'not_found'
          ? 'This server is not in development mode: sign in with a token.'
          : `Could not sign in: ${failure.message}`;
      }
    };
    const onTokenSubmit = (event) => {
      event.preventDefault();
      const token = /** @type {HTMLTextAreaElement} */ (byId('token-input')).value.trim();
      try {
        userOfToken(token);
      } catch (failure) {
        error.textContent = `That token cannot be used: ${failure.message}`;
        return;
      }
      error.textContent = '';
      finish(token);
    };
    devForm.addEventListener('submit', onDevSubmit);
    tokenForm.addEventListener('submit', onTokenSubmit);
  });
}
