// The ChatFlow chat page: one WebSocket to send (/chat/{roomId}), one to receive
// (/subscribe/{roomId}), both reconnecting by themselves. Plain script, no build step.
'use strict';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const sameOrigin = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host;

// Served by the standalone server, the page talks to its own origin; against a deployment, pass
// the producer (or edge) and consumer URL templates: ?ingest=ws://...&subscribe=ws://...
$('ingest-url').value = params.get('ingest') || sameOrigin + '/chat/{roomId}';
$('subscribe-url').value = params.get('subscribe') || sameOrigin + '/subscribe/{roomId}';
// A link may point the page at other servers: show them rather than send there unseen.
if (params.has('ingest') || params.has('subscribe')) $('servers').open = true;
$('room').value = params.get('room') || '1';
$('username').value = params.get('user') || 'guest' + String(Math.floor(Math.random() * 9000) + 1000);

// A token comes in the fragment (#token=JWT), which browsers never send to a server, and leaves
// the address bar at once so it is not bookmarked or shared. Its subject is the user.
const token = new URLSearchParams(location.hash.slice(1)).get('token');
if (location.hash) history.replaceState(null, '', location.pathname + location.search);
const claims = (() => {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(part));
  } catch {
    return null;
  }
})();
// WebSockets in a browser cannot carry headers: the token rides in a subprotocol.
const protocols = token ? ['chatflow', 'chatflow.token.' + token] : undefined;

// The wire protocol wants a numeric user id; one per tab is enough for a person.
let userId = claims ? String(claims.sub) : sessionStorage.getItem('chatflow.userId');
if (!userId) {
  userId = String(Math.floor(Math.random() * 100000) + 1);
  sessionStorage.setItem('chatflow.userId', userId);
}
if (claims && claims.name) $('username').value = claims.name;

// A WebSocket that reopens after a close, with backoff, until stop() is called. `url` is a
// string, or a function giving the URL of each (re)connection.
class Link {
  constructor(url, handlers) {
    this.url = url;
    this.handlers = handlers;
    this.delay = 250;
    this.stopped = false;
    this.ws = null;
    this.open();
  }

  open() {
    const ws = new WebSocket(typeof this.url === 'function' ? this.url() : this.url, protocols);
    this.ws = ws;
    ws.onopen = () => {
      this.delay = 250;
      this.handlers.onopen();
    };
    ws.onmessage = (ev) => this.handlers.onmessage(ev.data);
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.handlers.onclose(ev);
      if (this.stopped) return;
      // Jitter keeps a room's tabs from all coming back at the same instant after a restart.
      setTimeout(() => this.stopped || this.open(), this.delay * (0.5 + Math.random()));
      this.delay = Math.min(this.delay * 2, 4000);
    };
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  send(text) {
    this.ws.send(text);
  }

  stop() {
    this.stopped = true;
    if (this.ws) this.ws.close(1000, 'leaving');
    this.ws = null;
  }
}

// crypto.randomUUID needs a secure context; a deployment over plain http is not one.
function newId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
}

let chat = null;
let feed = null;
// Sent on the current chat socket and not yet answered, oldest first. After a reconnect they are
// sent again with the same clientMessageId, which the server deduplicates.
let unanswered = [];
// Set when the chat socket (re)opens: `unanswered` goes out once the subscription is open too,
// so a sender sees its own messages arrive.
let resendDue = false;
const seen = new Set();

function flush() {
  if (!resendDue || !chat.isOpen || !feed || !feed.isOpen) return;
  resendDue = false;
  for (const m of unanswered) chat.send(JSON.stringify(m));
}

function setStatus() {
  const el = $('status');
  const up = chat && chat.isOpen && feed && feed.isOpen;
  el.textContent = !chat ? 'not connected' : up ? 'connected' : 'reconnecting…';
  el.className = !chat ? '' : up ? 'connected' : 'reconnecting';
  $('message').disabled = !chat;
  $('send').disabled = !chat;
}

function showError(text) {
  const li = document.createElement('li');
  li.textContent = text;
  $('errors').prepend(li);
  while ($('errors').children.length > 5) $('errors').lastChild.remove();
}

function showSystem(text) {
  const li = document.createElement('li');
  li.className = 'system';
  li.innerHTML = '<span class="who"></span><span class="text"></span><span class="meta"></span>';
  li.querySelector('.text').textContent = text;
  li.querySelector('.meta').textContent = new Date().toLocaleTimeString();
  $('log').append(li);
}

function showBroadcast(ev) {
  // A reconnected subscription may see a message again; the log shows each once.
  if (seen.has(ev.messageId)) return;
  seen.add(ev.messageId);
  // Redeliveries come soon after the original: the last few thousand ids are enough.
  if (seen.size > 5000) seen.delete(seen.values().next().value);
  const li = document.createElement('li');
  li.className = 'msg' + (ev.userId === userId && ev.username === $('username').value ? ' mine' : '');
  li.dataset.messageId = ev.messageId;
  li.innerHTML = '<span class="who"></span><span class="text"></span><span class="meta"></span>';
  li.querySelector('.who').textContent = ev.username;
  const kind = ev.messageType === 'TEXT' ? '' : `[${ev.messageType}] `;
  li.querySelector('.text').textContent = kind + ev.message;
  // From the sender's timestamp to arrival here: exact for senders sharing this clock.
  const latency = Date.now() - Date.parse(ev.timestamp);
  li.querySelector('.meta').textContent = Number.isFinite(latency) ? `${latency} ms` : '';
  li.querySelector('.meta').title = `sent ${ev.timestamp}, broadcast ${ev.serverTimestamp}`;
  $('log').append(li);
  li.scrollIntoView({ block: 'nearest' });
}

function onReply(data) {
  let reply;
  try {
    reply = JSON.parse(data);
  } catch {
    showError(`unreadable reply: ${data}`);
    return;
  }
  // Replies come in send order; clientMessageId, when present, says which one this is. A reply
  // for nothing pending (an answer to a resend already answered) takes nothing off the list.
  const i = reply.clientMessageId ? unanswered.findIndex((m) => m.clientMessageId === reply.clientMessageId) : 0;
  const [msg] = i < 0 ? [] : unanswered.splice(i, 1);
  if (reply.status !== 'OK') {
    const what = msg ? ` (“${msg.message}”)` : '';
    showError(`${reply.errorCode}: ${reply.errorMessage}${what}`);
  }
}

// The room's newest messages, from the history a resume uses (GET /history/{roomId} beside the
// subscribe route); none when the server has no such route or this page may not ask it.
async function recent(subscribeUrl) {
  try {
    const u = new URL(subscribeUrl.replace(/^ws/, 'http'));
    u.pathname = u.pathname.replace('/subscribe/', '/history/');
    u.search = '?limit=50';
    const resp = await fetch(u, {
      headers: token ? { Authorization: `Bearer ${token}` } : {},
      // A server that does not answer must not hold the subscription back.
      signal: AbortSignal.timeout(5000),
    });
    return resp.ok ? (await resp.json()).events || [] : [];
  } catch {
    return [];
  }
}

// Who is online: the roster (GET /presence/{roomId}) read when a subscription's presence frames
// start, then kept by their joins and leaves; read again when a frame left some out.
const online = new Map();

function showOnline(count) {
  $('online').hidden = false;
  $('online-count').textContent = `${count} online:`;
  $('roster').replaceChildren(...[...online].map(([id, name]) => {
    const li = document.createElement('li');
    li.textContent = name || id;
    li.dataset.user = id;
    return li;
  }));
}

async function readRoster(subscribeUrl) {
  try {
    const u = new URL(subscribeUrl.replace(/^ws/, 'http'));
    u.pathname = u.pathname.replace('/subscribe/', '/presence/');
    u.search = '?limit=200';
    const resp = await fetch(u, {
      headers: token ? { Authorization: `Bearer ${token}` } : {},
      signal: AbortSignal.timeout(5000),
    });
    if (!resp.ok) return;
    const roster = await resp.json();
    online.clear();
    for (const m of roster.members) online.set(m.userId, m.name);
    showOnline(roster.count);
  } catch {
    // A server without presence: no roster shown.
  }
}

// Bumped by each join, so a join still reading history gives way to a later one.
let joins = 0;

function connect() {
  if (chat) chat.stop();
  if (feed) feed.stop();
  feed = null;
  const joined = ++joins;
  unanswered = [];
  resendDue = false;
  seen.clear();
  online.clear();
  $('online').hidden = true;
  $('log').replaceChildren();
  $('errors').replaceChildren();
  const room = $('room').value.trim();
  const url = (template) => template.replace('{roomId}', encodeURIComponent(room));
  history.replaceState(null, '', `?${new URLSearchParams({ ...Object.fromEntries(params), room, user: $('username').value })}`);
  showSystem(`room ${room}`);
  let feedWasOpen = false;
  chat = new Link(url($('ingest-url').value), {
    onopen: () => {
      resendDue = true;
      flush();
      setStatus();
    },
    onmessage: onReply,
    onclose: setStatus,
  });
  // The last broadcast's place in the room: a reconnect resumes after it and gets what it missed.
  let position = null;
  // Presence frames too; without a token the page says who it is (with one, the token does).
  const presence = new URLSearchParams({ presence: 'true' });
  if (!token) {
    presence.set('user', userId);
    presence.set('name', $('username').value);
  }
  const feedUrl = () => {
    const base = url($('subscribe-url').value);
    const query = new URLSearchParams(presence);
    if (position !== null) query.set('after', position);
    return `${base}${base.includes('?') ? '&' : '?'}${query}`;
  };
  let rosterDue = true;
  let opens = 0;
  const subscribe = () => new Link(feedUrl, {
    onopen: () => {
      opens += 1;
      rosterDue = true;
      // Without a position there is nothing to resume from: what was broadcast meanwhile is gone.
      if (feedWasOpen && position === null) showSystem('reconnected: messages sent while disconnected are not shown');
      feedWasOpen = true;
      flush();
      setStatus();
    },
    onmessage: (data) => {
      let ev;
      try {
        ev = JSON.parse(data);
      } catch {
        showError(`unreadable broadcast: ${data}`);
        return;
      }
      if (ev.status === 'PRESENCE') {
        if (rosterDue || ev.omitted > 0) {
          rosterDue = false;
          readRoster(url($('subscribe-url').value));
          return;
        }
        // A few arrivals and departures are told in the log; a storm only in the list.
        const tell = ev.joined.length + ev.left.length <= 5;
        for (const u of ev.joined) {
          online.set(u.userId, u.name);
          if (tell) showSystem(`${u.name || u.userId} joined`);
        }
        for (const u of ev.left) {
          if (tell) showSystem(`${online.get(u) || u} left`);
          online.delete(u);
        }
        showOnline(ev.count);
        return;
      }
      if (ev.status === 'RECOVERY') {
        // The first subscription resumes right after the recent messages shown.
        if (opens === 1) {
          if (!ev.recovered) showSystem('some messages between the recent ones and live ones may be missing');
          return;
        }
        showSystem(ev.recovered
          ? `reconnected: ${ev.replayed} missed message(s) caught up`
          : 'reconnected: the server could not replay everything sent while disconnected; some messages may be missing');
        return;
      }
      if (ev.position) position = ev.position;
      showBroadcast(ev);
    },
    onclose: (ev) => {
      if (ev.code === 1008) showSystem('fell too far behind: resubscribed');
      if (ev.code === 4401) {
        // The same token would only be refused again.
        showError('the token expired: open the page again with a fresh #token=');
        chat.stop();
        feed.stop();
      }
      setStatus();
    },
  });
  // Recent messages first; the subscription then resumes after the last of them, so none is
  // shown twice and none between them and the live ones is missed.
  recent(url($('subscribe-url').value)).then((events) => {
    if (joined !== joins) return;
    for (const ev of events) {
      if (ev.position) position = ev.position;
      showBroadcast(ev);
    }
    feed = subscribe();
    setStatus();
  });
  setStatus();
}

$('join').addEventListener('click', connect);
$('compose').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = $('message').value;
  if (!chat || text === '') return;
  const msg = {
    userId,
    username: $('username').value,
    message: text,
    timestamp: new Date().toISOString(),
    messageType: 'TEXT',
    clientMessageId: newId(),
  };
  unanswered.push(msg);
  // While reconnecting the message waits in `unanswered` and goes out with the resend.
  if (chat.isOpen && !resendDue) chat.send(JSON.stringify(msg));
  $('message').value = '';
});

// A link that names the room and who is speaking (a user, or a token) joins at once.
if (params.has('room') && (params.has('user') || claims)) connect();
