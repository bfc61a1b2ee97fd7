// test/browser.ts: a real headless Chromium that a test drives as a person
// would use a page: it opens it, types, waits for what shows, and takes a
// screenshot, over the DevTools protocol (a WebSocket, Node's own client).
// Every console error, uncaught exception and failed load of the page is
// kept, so that a test can require none.

import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from './shards.ts';

export type Page = {
  /** Runs `expression` in the page (awaiting a promise it gives); its value, as JSON. */
  eval<T = unknown>(expression: string): Promise<T>;
  /** Polls `expression` until it is true: the ms it took; fails after `timeoutMs`, naming `what`. */
  until(what: string, expression: string, timeoutMs?: number): Promise<number>;
  /** Loads another URL in this tab, and waits for it. */
  goto(url: string): Promise<void>;
  /** The page as a person sees it, as a PNG file. */
  screenshot(file: string): Promise<void>;
  /** Console errors, uncaught exceptions and failed loads, as they came. */
  errors: string[];
};

export type Browser = { open(url: string, size?: { width: number; height: number }): Promise<Page>; close(): Promise<void> };

/** The Chromium on this machine, or undefined (the tests that need it then skip). */
export async function chromium(): Promise<string | undefined> {
  for (const name of ['chromium', 'chromium-browser']) if ((await run('sh', ['-c', `command -v ${name}`])).code === 0) return name;
  return undefined;
}

/** Starts Chromium headless, with a profile in `dir`. */
export async function startBrowser(command: string, dir: string): Promise<Browser> {
  const profile = join(dir, 'profile');
  const child: ChildProcess = spawn(command, [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--remote-debugging-port=0', `--user-data-dir=${profile}`, 'about:blank',
  ], { stdio: 'ignore' });
  // Chromium writes the port it chose into its profile once it listens.
  let port: number | undefined;
  for (let tries = 0; port === undefined; tries++) {
    if (child.exitCode !== null || tries > 300) throw new Error(`Chromium did not start (exit code ${child.exitCode})`);
    port = Number((await readFile(join(profile, 'DevToolsActivePort'), 'utf8').catch(() => '')).split('\n')[0]) || undefined;
    if (port === undefined) await new Promise((r) => setTimeout(r, 100));
  }
  const sockets: WebSocket[] = [];
  return {
    async open(url, size = { width: 1280, height: 900 }) {
      const target = await (await fetch(`http://127.0.0.1:${port}/json/new?about:blank`, { method: 'PUT' })).json();
      const ws = new WebSocket(target.webSocketDebuggerUrl);
      sockets.push(ws);
      await once(ws, 'open');
      const page = connect(ws);
      await page.send('Emulation.setDeviceMetricsOverride', { ...size, deviceScaleFactor: 1, mobile: false });
      await page.page.goto(url);
      return page.page;
    },
    async close() {
      for (const ws of sockets) ws.close();
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await once(child, 'exit');
      }
    },
  };
}

/** The protocol over one page's socket: commands by id, events to whoever waits for them. */
function connect(ws: WebSocket) {
  let last = 0;
  const pending = new Map<number, { resolve: (v: any) => void; reject: (e: Error) => void }>();
  const waiting = new Map<string, Array<(params: any) => void>>();
  const errors: string[] = [];
  ws.addEventListener('message', (event) => {
    const m = JSON.parse(String(event.data));
    if (m.id !== undefined) {
      const p = pending.get(m.id)!;
      pending.delete(m.id);
      if (m.error) p.reject(new Error(`${m.error.message} (${m.error.code})`));
      else p.resolve(m.result);
      return;
    }
    if (m.method === 'Runtime.consoleAPICalled' && (m.params.type === 'error' || m.params.type === 'assert')) {
      errors.push(`console.${m.params.type}: ${m.params.args.map((a: any) => a.value ?? a.description).join(' ')}`);
    }
    if (m.method === 'Runtime.exceptionThrown') errors.push(`exception: ${m.params.exceptionDetails.exception?.description ?? m.params.exceptionDetails.text}`);
    if (m.method === 'Log.entryAdded' && m.params.entry.level === 'error') errors.push(`${m.params.entry.source}: ${m.params.entry.text} ${m.params.entry.url ?? ''}`);
    for (const resolve of waiting.get(m.method) ?? []) resolve(m.params);
    waiting.delete(m.method);
  });
  const send = (method: string, params: object = {}): Promise<any> => {
    const id = ++last;
    ws.send(JSON.stringify({ id, method, params }));
    return new Promise((resolve, reject) => pending.set(id, { resolve, reject }));
  };
  const next = (method: string) => new Promise((resolve) => waiting.set(method, [...(waiting.get(method) ?? []), resolve]));
  const evaluate = async <T>(expression: string): Promise<T> => {
    const { result, exceptionDetails } = await send('Runtime.evaluate', { expression, awaitPromise: true, returnByValue: true });
    if (exceptionDetails) throw new Error(`in the page: ${exceptionDetails.exception?.description ?? exceptionDetails.text}`);
    return result.value as T;
  };
  const page: Page = {
    eval: evaluate,
    async goto(url) {
      const loaded = next('Page.loadEventFired');
      await send('Page.navigate', { url });
      await loaded;
    },
    async until(what, expression, timeoutMs = 30_000) {
      const start = performance.now();
      while (!(await evaluate<boolean>(`Boolean(${expression})`))) {
        if (performance.now() - start > timeoutMs) throw new Error(`the page did not show ${what} within ${timeoutMs} ms`);
        await new Promise((r) => setTimeout(r, 20));
      }
      return performance.now() - start;
    },
    async screenshot(file) {
      const { data } = await send('Page.captureScreenshot', { format: 'png' });
      await writeFile(file, Buffer.from(data, 'base64'));
    },
    errors,
  };
  // Enabled before the page loads, so that nothing it says is missed.
  void Promise.all([send('Runtime.enable'), send('Log.enable'), send('Page.enable')]);
  return { send, next, page };
}
