// The chat page in a real browser: Debian's Chromium, driven by playwright-core (no browser
// download), against the standalone server binary.
//
//   CHATFLOW_SERVER_BIN   server binary (default: target/debug/chatflow-server)
//   CHROMIUM              browser (default: /usr/bin/chromium)
//   SCREENSHOT            where to save a picture of the page (default: none)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { once } from 'node:events';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const repo = fileURLToPath(new URL('../../../', import.meta.url));
const bin = process.env.CHATFLOW_SERVER_BIN ?? `${repo}target/debug/chatflow-server`;
const T = 15_000;

async function freePort() {
  const srv = createServer().listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address();
  srv.close();
  await once(srv, 'close');
  return port;
}

async function startServer(port, env = {}) {
  const proc = spawn(bin, [], {
    env: { ...process.env, LISTEN_ADDR: `127.0.0.1:${port}`, ROOMS_START: '1', ROOMS_END: '20', RUST_LOG: 'warn', ...env },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const deadline = Date.now() + T;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`${bin} exited with ${proc.exitCode}`);
    try {
      if ((await fetch(`http://127.0.0.1:${port}/ready`)).ok) return proc;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) throw new Error(`${bin} not ready on port ${port}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function stopServer(proc) {
  const exited = once(proc, 'exit');
  proc.kill('SIGTERM');
  const [code] = await exited;
  assert.equal(code, 0, 'the server exits cleanly on SIGTERM');
}

async function say(page, text) {
  await page.fill('#message', text);
  await page.click('#send');
}

// The texts of the room's broadcasts, in the order the page shows them.
const shown = (page) => page.$$eval('#log li.msg .text', (els) => els.map((e) => e.textContent));

async function expectShown(page, expected) {
  await page.waitForFunction(
    (n) => document.querySelectorAll('#log li.msg').length >= n,
    expected.length,
    { timeout: T },
  );
  assert.deepEqual(await shown(page), expected);
}

// Waits until the page lists exactly `names` as online, in any order.
async function online(page, names) {
  const want = [...names].sort();
  await page.waitForFunction(
    (w) => JSON.stringify([...document.querySelectorAll('#roster li')].map((e) => e.textContent).sort()) === w,
    JSON.stringify(want),
    { timeout: T },
  );
}

const status = (page, text) => page.waitForSelector(`#status:text-is("${text}")`, { timeout: T });

const launch = () =>
  chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    // This machine's network is closed: Chromium's background services would only fail.
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });

// An HS256 token, as an identity provider would sign it.
function hs256(secret, claims) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = `${part({ alg: 'HS256', typ: 'JWT' })}.${part(claims)}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

test('two tabs chat in one room, see validation errors and keep chatting across a restart', async (t) => {
  const port = await freePort();
  let server = await startServer(port);
  const browser = await launch();
  t.after(async () => {
    await browser.close();
    if (server.exitCode === null) server.kill('SIGKILL');
  });
  const context = await browser.newContext({ viewport: { width: 900, height: 560 } });
  const url = (user) => `http://127.0.0.1:${port}/?room=7&user=${user}`;
  const alice = await context.newPage();
  const bob = await context.newPage();
  await alice.goto(url('alice'));
  await bob.goto(url('bob42'));
  await status(alice, 'connected');
  await status(bob, 'connected');

  await t.test('a message typed in one tab appears in both, in order', async () => {
    await say(alice, 'hello from alice');
    await expectShown(bob, ['hello from alice']);
    await say(bob, 'hi alice');
    await expectShown(alice, ['hello from alice', 'hi alice']);
    await say(alice, 'the room keeps its order');
    const expected = ['hello from alice', 'hi alice', 'the room keeps its order'];
    await expectShown(alice, expected);
    await expectShown(bob, expected);
    // Each entry shows its end-to-end latency.
    const meta = await alice.$eval('#log li.msg .meta', (e) => e.textContent);
    assert.match(meta, /^\d+ ms$/);
  });

  await t.test('each tab shows who is online, and a closed tab leaves the list', async () => {
    await online(alice, ['alice', 'bob42']);
    await online(bob, ['alice', 'bob42']);
    const dave = await context.newPage();
    await dave.goto(url('dave'));
    await status(dave, 'connected');
    await online(alice, ['alice', 'bob42', 'dave']);
    await online(dave, ['alice', 'bob42', 'dave']);
    await alice.waitForSelector('#log li.system .text:text-is("dave joined")', { timeout: T });
    await dave.close();
    await online(alice, ['alice', 'bob42']);
    await alice.waitForSelector('#log li.system .text:text-is("dave left")', { timeout: T });
    assert.equal(await alice.$eval('#online-count', (e) => e.textContent), '2 online:');
  });

  await t.test('an invalid username shows the server\'s VALIDATION_ERROR reason', async () => {
    const mallory = await context.newPage();
    await mallory.goto(url('x!'));
    await status(mallory, 'connected');
    await say(mallory, 'let me in');
    const error = await mallory.waitForSelector('#errors li', { timeout: T });
    assert.equal(
      await error.textContent(),
      'VALIDATION_ERROR: username must be 3-20 letters or digits (A-Z, a-z, 0-9) (“let me in”)',
    );
    await mallory.close();
    // Nothing was broadcast for it.
    assert.equal((await shown(alice)).length, 3);
  });

  await t.test('a tab opened later shows the room\'s recent messages, then live ones', async () => {
    const carol = await context.newPage();
    await carol.goto(url('carol'));
    await status(carol, 'connected');
    const recent = ['hello from alice', 'hi alice', 'the room keeps its order'];
    await expectShown(carol, recent);
    await say(bob, 'welcome carol');
    await expectShown(carol, [...recent, 'welcome carol']);
    await carol.close();
    await expectShown(alice, [...recent, 'welcome carol']);
  });

  await t.test('after a server restart the tabs reconnect and keep chatting', async () => {
    const before = ['hello from alice', 'hi alice', 'the room keeps its order', 'welcome carol'];
    await stopServer(server);
    await status(alice, 'reconnecting…');
    await status(bob, 'reconnecting…');
    // Typed while the server is down: sent when the tab is back.
    await say(bob, 'anyone there?');
    server = await startServer(port);
    await status(alice, 'connected');
    await status(bob, 'connected');
    await expectShown(bob, [...before, 'anyone there?']);
    await say(alice, 'back again');
    await expectShown(bob, [...before, 'anyone there?', 'back again']);
    // Without a resume position, alice sees bob's resent message only if her subscription was
    // back before it went out; everything after both were connected she sees in order.
    await alice.waitForSelector('#log li.msg:last-child .text:text-is("back again")', { timeout: T });
    assert.deepEqual((await shown(alice)).filter((m) => m !== 'anyone there?'), [...before, 'back again']);
  });

  if (process.env.SCREENSHOT) await alice.screenshot({ path: process.env.SCREENSHOT });
});

test('with tokens checked, the page carries its token from the fragment and speaks as its user', async (t) => {
  const secret = 'browser-test-secret-browser-test-secret';
  const dir = mkdtempSync(`${tmpdir()}/chatflow-browser-`);
  writeFileSync(`${dir}/secret`, secret);
  const port = await freePort();
  const server = await startServer(port, { JWT_SECRET_FILE: `${dir}/secret` });
  const browser = await launch();
  t.after(async () => {
    await browser.close();
    if (server.exitCode === null) server.kill('SIGKILL');
  });
  const page = await browser.newPage();
  const token = hs256(secret, {
    sub: '4242', name: 'carol', exp: Math.floor(Date.now() / 1000) + 600,
    chatflow: { publish: ['3'], subscribe: ['3'] },
  });
  await page.goto(`http://127.0.0.1:${port}/?room=3#token=${token}`);
  await status(page, 'connected');
  assert.equal(await page.evaluate(() => location.hash), '', 'the token leaves the address bar');
  await say(page, 'signed in');
  await expectShown(page, ['signed in']);
  assert.equal(await page.$eval('#username', (e) => e.value), 'carol');
  // Online as the token's user, whatever the page says.
  await online(page, ['carol']);
  assert.equal(await page.$eval('#roster li', (e) => e.dataset.user), '4242');

  // Without a token the same page cannot connect.
  const anonymous = await browser.newPage();
  await anonymous.goto(`http://127.0.0.1:${port}/?room=3&user=eve99`);
  await anonymous.waitForTimeout(1500);
  assert.equal(await anonymous.$eval('#status', (e) => e.textContent), 'reconnecting…');
  await stopServer(server);
});
