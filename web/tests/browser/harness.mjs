// Browser-test plumbing: Debian's Chromium through playwright-core, the line protocol with the Rust test that owns the servers, polling with deadlines, test files, screenshots on failure.

import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { crc32, deflateSync } from 'node:zlib';
import { chromium } from 'playwright-core';

/** The flags that make Debian's Chromium work headless as root on a machine with a closed network. */
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

/** A fresh browser: playwright-core gives every launch its own temporary user-data dir. */
export function launchBrowser() {
  return chromium.launch({ executablePath: process.env.NATTER_CHROMIUM ?? '/usr/bin/chromium', args: CHROMIUM_ARGS, headless: true });
}

const answers = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/**
 * Asks the Rust test (which owns the gateway) to do something, and waits for its one-line answer.
 * @param {string} command e.g. `stop-gateway`
 */
export async function askTestHarness(command) {
  process.stdout.write(`natter-test: ${command}\n`);
  const answer = await answers.next();
  if (answer.done) throw new Error(`the test harness closed stdin instead of answering ${command}`);
  return answer.value;
}

/**
 * Re-checks `check` until it returns a truthy value, failing with `what` after the deadline.
 * @template T
 * @param {string} what
 * @param {() => Promise<T>|T} check
 * @param {number} [timeoutMs]
 * @returns {Promise<T>}
 */
export async function eventually(what, check, timeoutMs = 20_000) {
  const giveUpAt = Date.now() + timeoutMs;
  let lastError;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (error) {
      lastError = error;
    }
    if (Date.now() > giveUpAt) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}${lastError ? ` (last error: ${lastError.message})` : ''}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** A real PNG (RGB gradient) the media worker can decode and thumbnail. */
export function pngImage(width, height) {
  const chunk = (type, data) => {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(data.length);
    const typeAndData = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const checksum = Buffer.alloc(4);
    checksum.writeUInt32BE(crc32(typeAndData));
    return Buffer.concat([length, typeAndData, checksum]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8); // 8-bit RGB, no interlace
  const rows = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y += 1) {
    const rowStart = y * (width * 3 + 1);
    for (let x = 0; x < width; x += 1) rows.set([x % 256, y % 256, 160], rowStart + 1 + x * 3);
  }
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([signature, chunk('IHDR', header), chunk('IDAT', deflateSync(rows)), chunk('IEND', Buffer.alloc(0))]);
}

/** The EICAR test string: every antivirus, and the repo's own clamd signatures, call it infected. */
export const EICAR = Buffer.from('X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!H+H*', 'ascii');

/**
 * Runs named steps in order; on the first failure saves a screenshot of every page and exits non-zero.
 * @param {Record<string, import('playwright-core').Page>} pages by person
 * @param {Array<[string, () => Promise<void>]>} steps
 */
export async function runSteps(pages, steps) {
  const started = Date.now();
  const pageErrors = [];
  for (const [person, page] of Object.entries(pages)) {
    page.on('pageerror', (error) => pageErrors.push(`${person}: ${error.message}`));
    page.on('console', (message) => {
      if (message.type() === 'error' || message.type() === 'warning') console.log(`[${person} console ${message.type()}] ${message.text()}`);
    });
  }
  let current = '';
  try {
    for (const [name, step] of steps) {
      current = name;
      const stepStarted = Date.now();
      await step();
      console.log(`ok   ${name} (${Date.now() - stepStarted} ms)`);
      if (pageErrors.length > 0) throw new Error(`uncaught errors in the page: ${pageErrors.join('; ')}`);
    }
    console.log(`all ${steps.length} steps passed in ${Date.now() - started} ms`);
    return true;
  } catch (error) {
    console.log(`FAIL ${current}: ${error.stack ?? error}`);
    const directory = process.env.NATTER_SCREENSHOT_DIR ?? join(process.cwd(), '..', 'target', 'browser-screenshots');
    await mkdir(directory, { recursive: true });
    for (const [person, page] of Object.entries(pages)) {
      const path = join(directory, `${person}-failure.png`);
      await page.screenshot({ path, fullPage: true }).then(
        () => console.log(`screenshot of ${person}'s page: ${path}`),
        (screenshotError) => console.log(`no screenshot of ${person}'s page: ${screenshotError.message}`),
      );
    }
    return false;
  }
}
