// Media for the client: upload (grant, PUT), wait for the server's scan by polling with backoff or a `media` frame, and cached metadata with signed URLs.

/** Polling starts quickly (small images scan in milliseconds) and backs off to this. */
const POLL_INITIAL_MS = 250;
const POLL_MAX_MS = 2000;
const SCAN_TIMEOUT_MS = 120_000;
/** Signed media URLs live an hour; fetch fresh ones well before. */
const INFO_TTL_MS = 45 * 60_000;

/** An upload the server's scan refused (e.g. malware); `reason` says why. */
export class MediaRejectedError extends Error {
  constructor(mediaId, reason) {
    super(`the file was rejected: ${reason ?? 'no reason given'}`);
    this.name = 'MediaRejectedError';
    this.mediaId = mediaId;
    this.reason = reason ?? null;
  }
}

export class MediaUploads {
  /** @param {import('./http-api.js').HttpApi} api */
  constructor(api) {
    this.api = api;
    /** @type {Map<string, Set<() => void>>} media id → pollers waiting for its scan */
    this.waiters = new Map();
    /** @type {Map<string, {fetchedAt: number, info: Promise<import('./http-api.js').MediaInfo>}>} */
    this.infoCache = new Map();
  }

  /**
   * Uploads a file and waits for the scan; resolves with ready media, throws MediaRejectedError otherwise.
   * @param {Blob} file
   * @param {{onStatus?: (status: 'uploading'|'scanning') => void}} [options]
   * @returns {Promise<import('./http-api.js').MediaInfo>}
   */
  async upload(file, { onStatus } = {}) {
    onStatus?.('uploading');
    const mediaId = await this.api.upload(file);
    onStatus?.('scanning');
    const info = await this.waitForScan(mediaId);
    if (info.status !== 'ready') throw new MediaRejectedError(mediaId, info.reason);
    this.infoCache.set(mediaId, { fetchedAt: Date.now(), info: Promise.resolve(info) });
    return info;
  }

  /** Polls the metadata (backing off) until the scan is done; a `media` frame for it cuts a wait short. */
  async waitForScan(mediaId) {
    const giveUpAt = Date.now() + SCAN_TIMEOUT_MS;
    let delayMs = POLL_INITIAL_MS;
    for (;;) {
      const info = await this.api.mediaInfo(mediaId);
      if (info.status !== 'pending') return info;
      if (Date.now() > giveUpAt) throw new Error('the scan of the upload did not finish in time');
      await this.scanFinishedOr(mediaId, delayMs);
      delayMs = Math.min(POLL_MAX_MS, delayMs * 2);
    }
  }

  /** A `media` frame arrived: wake whoever polls for this media now. */
  scanFinished(mediaId) {
    for (const wake of [...(this.waiters.get(mediaId) ?? [])]) wake();
  }

  scanFinishedOr(mediaId, timeoutMs) {
    return new Promise((resolve) => {
      const waiters = this.waiters.get(mediaId) ?? new Set();
      this.waiters.set(mediaId, waiters);
      const wake = () => {
        clearTimeout(timer);
        waiters.delete(wake);
        if (waiters.size === 0) this.waiters.delete(mediaId);
        resolve();
      };
      const timer = setTimeout(wake, timeoutMs);
      waiters.add(wake);
    });
  }

  /** Metadata with fresh signed URLs, shared between callers and cached while the URLs are good. */
  info(mediaId) {
    const cached = this.infoCache.get(mediaId);
    if (cached && Date.now() - cached.fetchedAt < INFO_TTL_MS) return cached.info;
    const info = this.api.mediaInfo(mediaId);
    this.infoCache.set(mediaId, { fetchedAt: Date.now(), info });
    info.catch(() => this.infoCache.delete(mediaId));
    return info;
  }
}
