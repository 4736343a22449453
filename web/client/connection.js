// One resilient WebSocket to the gateway: `?resume=1` on every connect, reconnects with exponential backoff and full jitter, liveness pings.

/**
 * @typedef {'connecting'|'open'|'waiting'|'stopped'} ConnectionState
 * `waiting`: closed, the next attempt is scheduled.
 */

const DEFAULT_BACKOFF = { initialMs: 250, maxMs: 15_000 };
/** The gateway pings every 30 s by default; our own ping notices a dead path sooner than TCP would. */
const DEFAULT_PING_INTERVAL_MS = 15_000;

/**
 * Events: `state` (detail: {state, closeCode?, closeReason?}), `open` (a socket is up: send `sync` now),
 * `frame` (detail: a parsed server frame).
 */
export class Connection extends EventTarget {
  /**
   * @param {{wsUrl: string, token: string, deviceId: string, WebSocket?: typeof WebSocket,
   *   backoff?: {initialMs: number, maxMs: number}, pingIntervalMs?: number, random?: () => number}} options
   */
  constructor({ wsUrl, token, deviceId, WebSocket: WebSocketImpl = globalThis.WebSocket, backoff = DEFAULT_BACKOFF, pingIntervalMs = DEFAULT_PING_INTERVAL_MS, random = Math.random }) {
    super();
    this.wsUrl = wsUrl;
    this.token = token;
    this.deviceId = deviceId;
    this.WebSocketImpl = WebSocketImpl;
    this.backoff = backoff;
    this.pingIntervalMs = pingIntervalMs;
    this.random = random;
    /** @type {ConnectionState} */
    this.state = 'stopped';
    /** Failed attempts since the last healthy connection; drives the backoff. */
    this.failedAttempts = 0;
    /** @type {WebSocket|null} */
    this.socket = null;
    this.retryTimer = null;
    this.pingTimer = null;
    this.lastFrameAt = 0;
    this.nextPingId = 1;
  }

  start() {
    if (this.state !== 'stopped') return;
    this.connect();
  }

  stop() {
    this.setState('stopped');
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    const socket = this.socket;
    this.socket = null;
    socket?.close(1000, 'signed out');
  }

  /** Skips the backoff wait (e.g. when the browser says it is online again). */
  reconnectNow() {
    if (this.state !== 'waiting') return;
    clearTimeout(this.retryTimer);
    this.connect();
  }

  /** Gives up on the current socket (dead, or its session cannot go on) and reconnects after the backoff. */
  dropAndRetry(reason) {
    const socket = this.socket;
    if (!socket) return;
    // Forget it first: its close event may take as long as a dead path does, and is ignored then.
    this.socket = null;
    clearInterval(this.pingTimer);
    socket.close(4000, reason);
    this.scheduleRetry(4000, reason);
  }

  /** The session is working (synced): the next drop starts the backoff from the beginning again. */
  markHealthy() {
    this.failedAttempts = 0;
  }

  /**
   * @param {object} frame a client frame
   * @returns {boolean} false when no socket is open (the caller keeps it for later)
   */
  send(frame) {
    if (this.state !== 'open' || !this.socket) return false;
    this.socket.send(JSON.stringify(frame));
    return true;
  }

  /** The delay before attempt `failedAttempts + 1`: uniform in [0, min(max, initial · 2^attempts)]. */
  nextDelayMs() {
    const ceiling = Math.min(this.backoff.maxMs, this.backoff.initialMs * 2 ** this.failedAttempts);
    return Math.round(this.random() * ceiling);
  }

  connect() {
    const url = new URL(this.wsUrl);
    url.searchParams.set('token', this.token);
    url.searchParams.set('device', this.deviceId);
    url.searchParams.set('resume', '1');
    this.setState('connecting');
    let socket;
    try {
      socket = new this.WebSocketImpl(url.toString());
    } catch {
      this.scheduleRetry(undefined, 'could not open a socket');
      return;
    }
    this.socket = socket;
    socket.addEventListener('open', () => {
      if (this.socket !== socket) return;
      this.lastFrameAt = Date.now();
      this.setState('open');
      this.startPings(socket);
      this.dispatchEvent(new Event('open'));
    });
    socket.addEventListener('message', (event) => {
      if (this.socket !== socket) return;
      this.lastFrameAt = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this.dispatchEvent(new CustomEvent('frame', { detail: frame }));
    });
    socket.addEventListener('close', (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      clearInterval(this.pingTimer);
      if (this.state === 'stopped') return;
      this.scheduleRetry(event.code, event.reason);
    });
  }

  startPings(socket) {
    clearInterval(this.pingTimer);
    this.pingTimer = setInterval(() => {
      if (this.socket !== socket) return;
      // Two intervals without any frame (not even our pong): the path is dead though no close arrived.
      if (Date.now() - this.lastFrameAt > 2 * this.pingIntervalMs) {
        this.dropAndRetry('no answer to pings');
        return;
      }
      socket.send(JSON.stringify({ type: 'ping', id: `ping-${this.nextPingId++}` }));
    }, this.pingIntervalMs);
  }

  scheduleRetry(closeCode, closeReason) {
    const delayMs = this.nextDelayMs();
    this.failedAttempts += 1;
    this.setState('waiting', closeCode, closeReason, delayMs);
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delayMs);
  }

  setState(state, closeCode, closeReason, retryInMs) {
    this.state = state;
    this.dispatchEvent(new CustomEvent('state', { detail: { state, closeCode, closeReason, retryInMs } }));
  }
}
