import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';

/** Debian's Chromium (CI installs it); playwright-core never downloads a browser. */
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** `extraArgs`: more Chromium switches, e.g. `--host-resolver-rules=MAP evil.test 127.0.0.1`. */
export function launchBrowser(extraArgs: readonly string[] = []): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    timeout: 30_000,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      ...extraArgs,
    ],
  });
}

export interface WatchedPage {
  readonly context: BrowserContext;
  readonly page: Page;
  /** alert/confirm/prompt messages the page tried to show (each is dismissed). */
  readonly dialogs: string[];
  /** Uncaught exceptions and console errors (CSP violations are console errors). */
  readonly errors: string[];
  close(): Promise<void>;
}

/**
 * A page in a fresh context (its own localStorage), recording what a test must not see:
 * JavaScript dialogs (an injected `alert(1)` would show up here) and errors.
 */
export async function openPage(
  browser: Browser,
  options: { width?: number; height?: number } = {},
): Promise<WatchedPage> {
  const context = await browser.newContext({
    viewport: { width: options.width ?? 1280, height: options.height ?? 720 },
    colorScheme: 'light',
    locale: 'en-GB',
    timezoneId: 'UTC',
  });
  const page = await context.newPage();
  page.setDefaultTimeout(10_000);
  page.setDefaultNavigationTimeout(15_000);
  const dialogs: string[] = [];
  const errors: string[] = [];
  page.on('dialog', (dialog) => {
    dialogs.push(dialog.message());
    void dialog.dismiss().catch(() => {});
  });
  page.on('pageerror', (error) => errors.push(`pageerror: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') errors.push(`console: ${message.text()}`);
  });
  // A string, not a function: it runs in the page (the tests compile without the DOM types).
  await page.addInitScript(
    "document.addEventListener('securitypolicyviolation', (event) => " +
      "console.error('CSP violation: ' + event.violatedDirective + ' ' + event.blockedURI));",
  );
  // Offline: a request to any other origin (a CDN) is refused, and reported.
  await context.route(
    (url) => url.hostname !== '127.0.0.1' && url.protocol !== 'data:',
    (route) => {
      errors.push(`request to another origin: ${route.request().url()}`);
      return route.abort();
    },
  );
  return { context, page, dialogs, errors, close: () => context.close() };
}

/**
 * One browser for a whole test file: `get()` launches it on first use and hands the same one
 * to every later caller (each test still opens a context of its own with openPage, so tests
 * share no cookies, storage or routes); `close()`, in the file's top-level after hook, closes
 * it if it was launched. Chromium costs about a CPU-second to start.
 */
export function browserPerFile(): { get(): Promise<Browser>; close(): Promise<void> } {
  let launched: Promise<Browser> | undefined;
  return {
    get: () => {
      launched ??= launchBrowser();
      return launched;
    },
    async close() {
      const browser = await launched?.catch(() => undefined);
      await browser?.close();
    },
  };
}
