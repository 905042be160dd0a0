// The twopc operator console. Plain JavaScript, no dependencies: it reads
// the admin HTTP API of the process that served it (same origin only) and
// draws what it finds. With a shared secret every call carries a proof:
// HMAC-SHA256 over a fresh nonce from /auth/challenge (README "The HTTP
// admin API with a secret"). SHA-256 and HMAC are implemented here because
// crypto.subtle exists only on https and localhost pages. The key lives in
// this page's memory (and in sessionStorage if asked), never in a URL or a
// cookie.
'use strict';

// ---- SHA-256 (FIPS 180-4) and HMAC (RFC 2104) ----
const TwopcCrypto = (() => {
  const K = new Uint32Array([
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
  ]);
  const ror = (x, n) => (x >>> n) | (x << (32 - n));

  function sha256(bytes) {
    const len = bytes.length;
    const total = (((len + 9) + 63) >> 6) << 6;
    const m = new Uint8Array(total);
    m.set(bytes);
    m[len] = 0x80;
    const dv = new DataView(m.buffer);
    dv.setUint32(total - 8, Math.floor(len / 0x20000000));
    dv.setUint32(total - 4, (len << 3) >>> 0);
    const H = new Uint32Array([
      0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
    ]);
    const W = new Uint32Array(64);
    for (let off = 0; off < total; off += 64) {
      for (let i = 0; i < 16; i++) W[i] = dv.getUint32(off + 4 * i);
      for (let i = 16; i < 64; i++) {
        const a = W[i - 15], b = W[i - 2];
        const s0 = ror(a, 7) ^ ror(a, 18) ^ (a >>> 3);
        const s1 = ror(b, 17) ^ ror(b, 19) ^ (b >>> 10);
        W[i] = (W[i - 16] + s0 + W[i - 7] + s1) | 0;
      }
      let [a, b, c, d, e, f, g, h] = H;
      for (let i = 0; i < 64; i++) {
        const t1 = (h + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + W[i]) | 0;
        const t2 = ((ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) | 0;
        h = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
      }
      H[0] += a; H[1] += b; H[2] += c; H[3] += d; H[4] += e; H[5] += f; H[6] += g; H[7] += h;
    }
    const out = new Uint8Array(32);
    const ov = new DataView(out.buffer);
    for (let i = 0; i < 8; i++) ov.setUint32(4 * i, H[i]);
    return out;
  }

  function hmac(key, msg) {
    let k = key.length > 64 ? sha256(key) : key;
    const inner = new Uint8Array(64 + msg.length);
    const outer = new Uint8Array(64 + 32);
    for (let i = 0; i < 64; i++) {
      const b = i < k.length ? k[i] : 0;
      inner[i] = b ^ 0x36;
      outer[i] = b ^ 0x5c;
    }
    inner.set(msg, 64);
    outer.set(sha256(inner), 64);
    return sha256(outer);
  }

  const utf8 = (s) => new TextEncoder().encode(s);
  const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  function unhex(s) {
    if (!/^([0-9a-fA-F]{2})*$/.test(s)) return null;
    const out = new Uint8Array(s.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(s.substr(2 * i, 2), 16);
    return out;
  }

  const KEY_DOMAIN = 'twopc-key-v1';
  // The derived key of `kind` (client, operator; participant with its id)
  // under the master secret, as `twopc keys derive` computes it.
  const derive = (master, kind, id = '-') => hmac(utf8(master), utf8(`${KEY_DOMAIN}\n${kind}\n${id}`));

  // A participant's admin-port key from its participant key.
  const adminOf = (participantKey, id) => hmac(participantKey, utf8(`${KEY_DOMAIN}\nadmin\n${id}`));

  // The Authorization header of one request. A participant's port checks
  // its admin key whatever `key=` says, so none is sent there.
  function authorization(auth, nonce, method, target, body) {
    const digest = hex(sha256(utf8(body)));
    const input = ['twopc-http-v1', nonce, method, target, digest].join('\n');
    const mac = hex(hmac(auth.key, utf8(input)));
    const which = auth.kind === 'admin' ? '' : `, key=${auth.kind}`;
    return { header: `TWOPC-HMAC nonce=${nonce}, mac=${mac}${which}`, digest };
  }

  // What the login field holds: a derived key line, or the master secret.
  // On the coordinator's console the master secret proves the operator
  // key; on participant `participant`'s, its admin key.
  function parseSecret(text, participant) {
    const t = text.trim();
    if (t.startsWith(KEY_DOMAIN)) {
      const words = t.slice(KEY_DOMAIN.length).trim().split(/\s+/);
      if (words.length !== 3) {
        throw new Error(`a key reads "${KEY_DOMAIN} KIND ID HEX" on one line, as twopc keys derive prints it`);
      }
      const [kind, id, h] = words;
      const key = unhex(h);
      if (!key || key.length !== 32) throw new Error('the key must end in 64 hex digits');
      if (participant) {
        if ((kind === 'admin' || kind === 'participant') && id === participant) {
          return { kind: 'admin', key: kind === 'admin' ? key : adminOf(key, participant) };
        }
        throw new Error(`this is the ${kind} key of ${id}; participant ${participant}'s console takes its admin key (twopc keys derive --admin ${participant}), its participant key or the master secret`);
      }
      if (kind !== 'client' && kind !== 'operator') {
        throw new Error(`this is a ${kind} key; the coordinator's console takes the operator key (or the client key, to read only) or the master secret`);
      }
      return { kind, key };
    }
    if (t.length < 16) {
      throw new Error('that is too short to be a master secret (16 characters or more) or a key from twopc keys derive');
    }
    if (participant) return { kind: 'admin', key: adminOf(derive(t, 'participant', participant), participant) };
    return { kind: 'operator', key: derive(t, 'operator') };
  }

  return { sha256, hmac, utf8, hex, unhex, derive, adminOf, authorization, parseSecret };
})();
window.TwopcCrypto = TwopcCrypto;

// ---- state ----
const S = {
  participant: null, // this participant's id, on a participant's console
  authOn: null, // whether the server wants proofs
  auth: null, // {kind, key}
  view: 'cluster',
  samples: [], // {t, committed, aborted} for the chart
  pages: [null], // the cursor of each page seen (null: the first)
  page: 0,
  detailId: null,
  timer: null,
};
const STORE_KEY = 'twopc-console-key';
const POLL_MS = 2000;
const CHART_WINDOW_MS = 5 * 60 * 1000;

const $ = (id) => document.getElementById(id);

// An element with attributes and children (strings become text nodes, so
// nothing from the server is ever parsed as HTML).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function age(ms) {
  if (ms === null || ms === undefined) return '–';
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error;
    this.body = body;
  }
}
class LoginNeeded extends Error {}

// ---- the API ----
async function api(method, target, body) {
  const headers = {};
  let data;
  if (body !== undefined) {
    data = JSON.stringify(body);
    headers['Content-Type'] = 'application/json';
  }
  if (S.authOn) {
    if (!S.auth) throw new LoginNeeded('log in first');
    const ch = await fetch('/auth/challenge', { cache: 'no-store', credentials: 'omit' });
    const chBody = await ch.json().catch(() => null);
    if (!ch.ok) throw new ApiError(ch.status, chBody);
    const proof = TwopcCrypto.authorization(S.auth, chBody.nonce, method, target, data || '');
    headers.Authorization = proof.header;
    if (data !== undefined) headers['x-twopc-body-sha256'] = proof.digest;
  }
  const r = await fetch(target, { method, headers, body: data, cache: 'no-store', credentials: 'omit' });
  const type = r.headers.get('content-type') || '';
  const payload = type.includes('json') ? await r.json().catch(() => null) : await r.text();
  if (r.status === 401) {
    const err = new ApiError(401, payload);
    forget();
    showLogin(`The coordinator refused the key: ${err.message}`);
    throw new LoginNeeded(err.message);
  }
  if (!r.ok) throw new ApiError(r.status, payload);
  return payload;
}

// ---- login ----
function forget() {
  S.auth = null;
  sessionStorage.removeItem(STORE_KEY);
}

// Drop everything shown: after a logout or a refused key the page holds
// no data.
function clearData() {
  for (const id of ['participants', 'members', 'reasons', 'txns']) $(id).tBodies[0].replaceChildren();
  for (const id of ['chart', 'diagram', 'detail-body']) $(id).replaceChildren();
  for (const id of ['state', 'counts', 'open-note', 'members-note', 'syncs', 'page-info']) $(id).textContent = '';
  $('detail').hidden = true;
  delete $('txns').dataset.loaded;
  S.samples = [];
  S.detailId = null;
}

function showLogin(message) {
  stopPolling();
  clearData();
  $('app').hidden = true;
  $('tabs').hidden = true;
  $('logout').hidden = true;
  $('who').textContent = '';
  $('login').hidden = false;
  $('login-error').textContent = message || '';
  $('secret').focus();
}

async function login(ev) {
  ev.preventDefault();
  $('login-error').textContent = '';
  let auth;
  try {
    auth = TwopcCrypto.parseSecret($('secret').value, S.participant);
  } catch (e) {
    $('login-error').textContent = e.message;
    return;
  }
  S.auth = auth;
  $('login-button').disabled = true;
  try {
    await api('GET', '/status');
  } catch (e) {
    if (!(e instanceof LoginNeeded)) {
      S.auth = null;
      $('login-error').textContent = `Cannot check the key: ${e.message}`;
    }
    return;
  } finally {
    $('login-button').disabled = false;
  }
  $('secret').value = '';
  if ($('remember').checked) {
    sessionStorage.setItem(STORE_KEY, `${auth.kind} ${TwopcCrypto.hex(auth.key)}`);
  }
  showApp();
}

function restore() {
  const saved = sessionStorage.getItem(STORE_KEY);
  if (!saved) return null;
  const [kind, h] = saved.split(' ');
  const key = TwopcCrypto.unhex(h || '');
  const kinds = S.participant ? ['admin'] : ['client', 'operator'];
  return key && kinds.includes(kind) ? { kind, key } : null;
}

const canAct = () => !S.authOn || (S.auth && S.auth.kind !== 'client');

function showApp() {
  $('login').hidden = true;
  $('app').hidden = false;
  $('tabs').hidden = false;
  $('logout').hidden = !S.authOn;
  $('who').textContent = S.authOn
    ? `signed in with the ${S.auth.kind} key${S.auth.kind === 'client' ? ' (read only)' : ''}`
    : 'no shared secret configured: open to anyone who reaches this port';
  for (const e of document.querySelectorAll('.coordinator-only')) e.hidden = !!S.participant;
  show(S.view);
}

// ---- views ----
function show(view) {
  S.view = view;
  for (const b of document.querySelectorAll('.tab')) b.classList.toggle('on', b.dataset.view === view);
  $('cluster-view').hidden = view !== 'cluster';
  $('transactions-view').hidden = view !== 'transactions';
  stopPolling();
  poll();
}

function stopPolling() {
  if (S.timer) clearTimeout(S.timer);
  S.timer = null;
}

async function poll() {
  stopPolling();
  try {
    if (S.view === 'cluster') await refreshCluster();
    else if ($('live').checked || !$('txns').dataset.loaded) await refreshTransactions();
    banner('');
  } catch (e) {
    if (e instanceof LoginNeeded) return;
    if (e.code === 'not_leader') notLeader(e.body);
    else banner(`Cannot reach the coordinator's API: ${e.message}`);
  }
  if (!$('app').hidden) S.timer = setTimeout(poll, POLL_MS);
}

function banner(text) {
  $('banner').hidden = !text;
  $('banner').textContent = text;
}

// A member of a coordinator group that does not lead serves only its
// status and metrics: say so, with a link to the leader's console when
// this member knows where it is.
function notLeader(body) {
  banner(`This member does not lead the coordinator group: ${body.message}`);
  if (body.leader_admin) {
    const link = el('a', { href: `${location.protocol}//${body.leader_admin}/` }, "Open the leader's console");
    $('banner').append(' ', link);
  }
}

// ---- cluster ----
function parseMetrics(text) {
  const out = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[3] || '').matchAll(/(\w+)="([^"]*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return out;
}
const sum = (ms, name) => ms.filter((m) => m.name === name).reduce((a, m) => a + m.value, 0);

// A participant's own view: who it is, whether it is registered, its
// counts and what it holds in doubt.
async function refreshParticipant() {
  const s = await api('GET', '/status');
  const state = $('state');
  state.textContent = s.connected ? 'REGISTERED' : 'NOT REGISTERED';
  state.className = `big ${s.connected ? 'yes' : 'no'}`;
  $('members-note').textContent = `participant ${s.id} of the coordinator at ${s.coordinator || '?'}`;
  $('counts').textContent = `${s.committed} committed · ${s.aborted} aborted`;
  $('open-note').textContent = `${(s.in_doubt || []).length} in doubt`;
}

async function refreshCluster() {
  if (S.participant) return refreshParticipant();
  const [status, parts, metricsText] = await Promise.all([
    api('GET', '/status'),
    api('GET', '/participants?limit=1000'),
    api('GET', '/metrics'),
  ]);
  const state = $('state');
  state.textContent = status.state;
  state.className = `big ${status.state}`;
  $('members-note').textContent =
    `${status.participants_registered} of ${status.expected_participants} participants registered`;
  const t = status.transactions || {};
  $('counts').textContent = `${t.committed} committed · ${t.aborted} aborted`;
  $('open-note').textContent = `${t.in_flight} in flight · ${t.awaiting_acks} awaiting acknowledgements`;
  renderMembers(status);
  renderParticipants(parts.participants || []);
  const ms = parseMetrics(metricsText);
  const committed = sum(ms, 'twopc_transactions_committed_total');
  const aborted = sum(ms, 'twopc_transactions_aborted_total');
  const syncs = sum(ms, 'twopc_wal_syncs_total');
  $('syncs').textContent = committed + aborted > 0 ? (syncs / (committed + aborted)).toFixed(3) : '–';
  const now = Date.now();
  S.samples.push({ t: now, committed, aborted });
  while (S.samples.length && S.samples[0].t < now - CHART_WINDOW_MS) S.samples.shift();
  drawChart();
  const reasons = ms.filter((m) => m.name === 'twopc_transactions_aborted_total');
  $('reasons').tBodies[0].replaceChildren(
    ...reasons.map((m) => el('tr', {}, el('td', {}, m.labels.reason || '–'), el('td', {}, String(m.value)))),
  );
}

// A member of a coordinator group reports the group (`group`: its term,
// the leader, each member with how far it is behind); a single coordinator
// does not.
function renderMembers(status) {
  const g = status.group;
  const members = g && Array.isArray(g.members) ? g.members : null;
  $('members-box').hidden = !members;
  if (!members) {
    $('members-note').textContent += ' · single coordinator';
    return;
  }
  $('members-note').textContent += ` · member ${g.me} of a group of ${members.length}, term ${g.term}`;
  const role = (m) => (m.id === g.leader ? 'leader' : m.voter ? 'follower' : 'learner');
  const lag = (m) => (m.lag === null || m.lag === undefined ? '–' : String(m.lag));
  $('members').tBodies[0].replaceChildren(
    ...members.map((m) =>
      el('tr', {}, el('td', {}, `${m.id} (${m.addr})`), el('td', {}, role(m)), el('td', {}, lag(m)),
        el('td', {}, String(g.leader ?? '–'))),
    ),
  );
}

function renderParticipants(list) {
  const rows = list.map((p) => {
    const remove = canAct()
      ? el('button', { type: 'button', class: 'danger', 'data-remove': p.id, onclick: () => confirmRemove(p) }, 'Remove…')
      : '';
    return el('tr', { 'data-id': p.id },
      el('td', {}, p.id),
      el('td', { class: p.connected ? 'yes' : 'no' }, p.connected ? 'yes' : 'no'),
      el('td', { class: p.alive ? 'yes' : 'no' }, p.alive ? 'yes' : 'no'),
      el('td', {}, `${age(p.last_heartbeat_age_ms)} ago`),
      el('td', {}, remove));
  });
  $('participants').tBodies[0].replaceChildren(...rows);
}

function drawChart() {
  const W = 640, H = 170, L = 40, B = 20;
  const box = svg('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'commits and aborts per second' });
  const rates = [];
  for (let i = 1; i < S.samples.length; i++) {
    const a = S.samples[i - 1], b = S.samples[i];
    const dt = (b.t - a.t) / 1000;
    if (dt > 0) rates.push({ t: b.t, c: Math.max(0, b.committed - a.committed) / dt, a: Math.max(0, b.aborted - a.aborted) / dt });
  }
  const max = Math.max(1, ...rates.map((r) => Math.max(r.c, r.a)));
  const now = Date.now();
  const x = (t) => L + ((t - (now - CHART_WINDOW_MS)) / CHART_WINDOW_MS) * (W - L - 10);
  const y = (v) => H - B - (v / max) * (H - B - 10);
  box.append(svg('line', { x1: L, y1: H - B, x2: W - 10, y2: H - B, stroke: '#999' }));
  box.append(svg('line', { x1: L, y1: 10, x2: L, y2: H - B, stroke: '#999' }));
  box.append(svg('text', { x: L - 4, y: 16, 'text-anchor': 'end', 'font-size': 10 }, max.toFixed(max < 10 ? 1 : 0)));
  box.append(svg('text', { x: L - 4, y: H - B, 'text-anchor': 'end', 'font-size': 10 }, '0'));
  box.append(svg('text', { x: L, y: H - 4, 'font-size': 10 }, '5 min ago'));
  box.append(svg('text', { x: W - 10, y: H - 4, 'text-anchor': 'end', 'font-size': 10 }, 'now'));
  for (const [key, colour, label, lx] of [['c', '#1c7c3a', 'commits/s', 60], ['a', '#b3261e', 'aborts/s', 150]]) {
    const pts = rates.map((r) => `${x(r.t).toFixed(1)},${y(r[key]).toFixed(1)}`).join(' ');
    if (pts) box.append(svg('polyline', { points: pts, fill: 'none', stroke: colour, 'stroke-width': 2, class: `series-${key}` }));
    box.append(svg('text', { x: lx, y: 22, fill: colour, 'font-size': 11 }, label));
  }
  $('chart').replaceChildren(box);
}

// ---- removal ----
function confirmDialog(title, text, extra, action) {
  const d = $('confirm');
  $('confirm-title').textContent = title;
  $('confirm-text').textContent = text;
  $('confirm-extra').replaceChildren(...extra);
  $('confirm-error').textContent = '';
  $('confirm-ok').disabled = false;
  $('confirm-ok').onclick = async () => {
    $('confirm-ok').disabled = true;
    try {
      await action();
      d.close();
      poll();
    } catch (e) {
      $('confirm-error').textContent = e.message;
      $('confirm-ok').disabled = false;
    }
  };
  $('confirm-cancel').onclick = () => d.close();
  d.showModal();
}

function confirmRemove(p) {
  const force = el('input', { type: 'checkbox', id: 'remove-force' });
  const extra = p.connected
    ? [el('label', {}, force, ' force: it is connected; it is told and exits (status 3)')]
    : [];
  confirmDialog(
    `Remove participant ${p.id}?`,
    'It is forgotten by the coordinator; refused while a transaction still needs it. Submits without a participant list no longer include it.',
    extra,
    () => api('DELETE', `/participants/${encodeURIComponent(p.id)}${force.checked ? '?force=true' : ''}`),
  );
}

// ---- transactions ----
const COLUMNS = ['transaction', 'state', 'decision', 'participants', 'age', 'in doubt', 'reason'];
const PARTICIPANT_COLUMNS = ['transaction', 'state', 'vote', 'participants', 'age', 'queries', 'heuristic', ''];

// A participant's row: in doubt (prepared, waiting for the decision) it
// can be resolved by hand.
function participantRow(t) {
  const doubt = t.state === 'prepared';
  const resolve = doubt && canAct()
    ? el('button', { type: 'button', class: 'danger', 'data-resolve': t.transaction_id, onclick: (ev) => { ev.stopPropagation(); confirmResolve(t); } }, 'Resolve…')
    : '';
  return el('tr', { class: 'pick', 'data-id': t.transaction_id, onclick: () => openDetail(t.transaction_id) },
    el('td', {}, el('code', {}, t.transaction_id)),
    el('td', { class: doubt ? 'doubt' : '' }, doubt ? 'prepared (in doubt)' : t.state),
    el('td', {}, t.vote || '–'),
    el('td', {}, (t.participants || []).join(', ')),
    el('td', { class: doubt ? 'in-doubt doubt' : '' }, age(t.age_ms)),
    el('td', {}, String(t.queries)),
    el('td', {}, t.heuristic || ''),
    el('td', {}, resolve));
}

function confirmResolve(t) {
  const decision = el('select', { id: 'resolve-decision' }, el('option', { value: '' }, 'choose…'),
    el('option', { value: 'commit' }, 'commit'), el('option', { value: 'abort' }, 'abort'));
  const reason = el('input', { id: 'resolve-reason', placeholder: 'why (kept in the log)' });
  const operator = el('input', { id: 'resolve-operator', placeholder: 'your name (optional)' });
  confirmDialog(
    `Resolve ${t.transaction_id} by hand?`,
    'A heuristic decision: this participant commits or aborts its part without the coordinator. If the coordinator decided the other way the outcome is mixed and must be reconciled by hand.',
    [el('label', {}, 'decision', decision), el('label', {}, 'reason', reason), el('label', {}, 'operator', operator)],
    () => {
      if (!decision.value) throw new Error('choose commit or abort');
      if (!reason.value.trim()) throw new Error('give a reason; it is kept in the log');
      const body = { decision: decision.value, reason: reason.value };
      if (operator.value.trim()) body.operator = operator.value.trim();
      return api('POST', `/transactions/${encodeURIComponent(t.transaction_id)}/resolve`, body);
    },
  );
}

async function refreshTransactions() {
  const q = new URLSearchParams();
  const state = $('state-filter').value;
  if (state) q.set('state', state);
  q.set('limit', $('page-size').value);
  const cursor = S.pages[S.page];
  if (cursor) q.set('cursor', cursor);
  const page = await api('GET', `/transactions?${q}`);
  S.pages.length = S.page + 1;
  if (page.next) S.pages.push(page.next);
  $('txn-head').replaceChildren(...(S.participant ? PARTICIPANT_COLUMNS : COLUMNS).map((c) => el('th', {}, c)));
  const rows = (page.transactions || []).map((t) => {
    if (S.participant) return participantRow(t);
    const waiting = t.decision && (t.awaiting_acks_from || []).length
      ? el('span', { class: 'doubt' }, `${age(t.age_ms)}: ${t.awaiting_acks_from.join(', ')}`)
      : '';
    return el('tr', { class: 'pick', 'data-id': t.transaction_id, onclick: () => openDetail(t.transaction_id) },
      el('td', {}, el('code', {}, t.transaction_id)),
      el('td', { class: t.state }, t.state),
      el('td', {}, t.decision || '–'),
      el('td', {}, (t.participants || []).join(', ')),
      el('td', {}, age(t.age_ms)),
      el('td', { class: 'in-doubt' }, waiting),
      el('td', {}, t.reason || ''));
  });
  $('txns').tBodies[0].replaceChildren(...rows);
  $('txns').dataset.loaded = '1';
  $('page-info').textContent = `page ${S.page + 1} · ${page.total} matching`;
  $('prev').disabled = S.page === 0;
  $('first').disabled = S.page === 0;
  $('next').disabled = !page.next;
  if (S.detailId) await refreshDetail();
}

function restartPaging() {
  S.pages = [null];
  S.page = 0;
  poll();
}

async function openDetail(id) {
  S.detailId = id;
  try {
    await refreshDetail();
  } catch (e) {
    S.detailId = null;
    $('detail').hidden = true;
    if (!(e instanceof LoginNeeded)) banner(e.status === 404 ? `No transaction ${id}: ${e.message}` : e.message);
  }
}

async function refreshParticipantDetail(id) {
  const t = await api('GET', `/transactions/${encodeURIComponent(id)}`);
  if (S.detailId !== id) return;
  $('detail').hidden = false;
  $('detail-id').textContent = id;
  const rows = [
    ['state', t.state],
    ['vote', t.vote || '–'],
    ['reason', t.reason || '–'],
    ['participants', (t.participants || []).join(', ')],
    ['age', age(t.age_ms)],
    ['queries to the coordinator', String(t.queries)],
    ['resolved by hand', t.heuristic || '–'],
  ];
  if (t.heuristic_outcome) rows.push(['heuristic outcome', JSON.stringify(t.heuristic_outcome)]);
  $('detail-body').replaceChildren(el('dl', {}, ...rows.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)])));
  $('diagram').replaceChildren(el('p', { class: 'muted' }, 'The timeline is the coordinator\'s: open this transaction in the coordinator\'s console.'));
}

async function refreshDetail() {
  const id = S.detailId;
  if (S.participant) return refreshParticipantDetail(id);
  const enc = encodeURIComponent(id);
  const [t, d] = await Promise.all([
    api('GET', `/transactions/${enc}`),
    api('GET', `/transactions/${enc}/diagram`),
  ]);
  if (S.detailId !== id) return;
  $('detail').hidden = false;
  $('detail-id').textContent = id;
  const map = (o) => Object.entries(o || {}).map(([k, v]) => `${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`).join(', ') || '–';
  const rows = [
    ['state', t.state],
    ['decision', t.decision || 'none yet'],
    ['reason', t.reason || '–'],
    ['participants', (t.participants || []).join(', ')],
    ['votes', map(t.votes)],
    ['acknowledged by', (t.acks || []).join(', ') || '–'],
    ['awaiting acknowledgement from', (t.awaiting_acks_from || []).join(', ') || '–'],
    ['errors', map(t.errors)],
    ['last error', t.last_error || '–'],
    ['retries', String(t.retries)],
    ['age', age(t.age_ms)],
    ['decided / durable / ended after', [t.decided_after_ms, t.durable_after_ms, t.ended_after_ms].map((v) => (v === null || v === undefined ? '–' : `${v} ms`)).join(' / ')],
    ['recovered from the log', t.recovered ? 'yes' : 'no'],
  ];
  if (t.heuristics) rows.push(['heuristic outcomes', map(t.heuristics)]);
  $('detail-body').replaceChildren(el('dl', {}, ...rows.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)])));
  $('diagram').replaceChildren(drawDiagram(d));
}

// A sequence diagram from the server's model (the same lines as
// `twopc txn show --diagram`).
function drawDiagram(d) {
  const COL = 190, LEFT = 90, TOP = 50, ROW = 30, CHAR = 6.6;
  const xs = {};
  d.actors.forEach((a, i) => { xs[a.alias] = LEFT + i * COL; });
  let width = LEFT + (d.actors.length - 1) * COL + LEFT;
  for (const l of d.lines) {
    if (l.kind === 'note') width = Math.max(width, xs[l.over] - 10 + l.text.length * CHAR + 30);
  }
  const height = TOP + d.lines.length * ROW + 40;
  const box = svg('svg', { width, height, viewBox: `0 0 ${width} ${height}`, class: 'sequence', role: 'img', 'aria-label': 'sequence diagram' });
  const defs = svg('defs');
  const marker = svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' });
  marker.append(svg('path', { d: 'M 0 0 L 10 5 L 0 10 z', fill: '#1d2330' }));
  defs.append(marker);
  box.append(defs);
  for (const a of d.actors) {
    const x = xs[a.alias];
    const g = svg('g', { class: 'actor', 'data-alias': a.alias });
    g.append(svg('line', { x1: x, y1: TOP - 12, x2: x, y2: height - 10, stroke: '#aab', 'stroke-dasharray': '4 3' }));
    g.append(svg('rect', { x: x - 70, y: 8, width: 140, height: 26, rx: 4, fill: '#eef2fb', stroke: '#2556c4' }));
    g.append(svg('text', { x, y: 26, 'text-anchor': 'middle', 'font-size': 12, class: 'actor-name' }, a.name));
    box.append(g);
  }
  d.lines.forEach((l, i) => {
    const y = TOP + i * ROW + 16;
    if (l.kind === 'note') {
      const x = xs[l.over] - 10;
      const g = svg('g', { class: 'note' });
      g.append(svg('rect', { x, y: y - 14, width: l.text.length * CHAR + 16, height: 20, fill: '#fff8dc', stroke: '#c9b458' }));
      g.append(svg('text', { x: x + 8, y: y, 'font-size': 11 }, l.text));
      box.append(g);
    } else {
      const x1 = xs[l.from], x2 = xs[l.to];
      const g = svg('g', { class: 'message', 'data-from': l.from, 'data-to': l.to });
      g.append(svg('line', { x1, y1: y, x2, y2: y, stroke: '#1d2330', 'marker-end': 'url(#arrow)', 'stroke-dasharray': l.reply ? '5 3' : 'none' }));
      g.append(svg('text', { x: (x1 + x2) / 2, y: y - 5, 'text-anchor': 'middle', 'font-size': 11 }, l.text));
      box.append(g);
    }
  });
  const wrap = el('div');
  wrap.append(box);
  const mermaid = el('details', {}, el('summary', {}, 'Mermaid text'), el('pre', {}, d.mermaid));
  wrap.append(mermaid);
  return wrap;
}

async function search(ev) {
  ev.preventDefault();
  const id = $('search').value.trim();
  if (id) await openDetail(id);
}

// ---- start ----
async function start() {
  for (const b of document.querySelectorAll('.tab')) b.addEventListener('click', () => show(b.dataset.view));
  $('login-form').addEventListener('submit', login);
  $('logout').addEventListener('click', () => { forget(); showLogin('Logged out.'); });
  $('state-filter').addEventListener('change', restartPaging);
  $('page-size').addEventListener('change', restartPaging);
  $('first').addEventListener('click', restartPaging);
  $('prev').addEventListener('click', () => { S.page = Math.max(0, S.page - 1); poll(); });
  $('next').addEventListener('click', () => { if (S.pages[S.page + 1]) { S.page += 1; poll(); } });
  $('search-form').addEventListener('submit', search);
  $('detail-close').addEventListener('click', () => { S.detailId = null; $('detail').hidden = true; });
  let r;
  try {
    r = await fetch('/auth/challenge', { cache: 'no-store', credentials: 'omit' });
  } catch (e) {
    banner(`Cannot reach the coordinator's API: ${e.message}`);
    return;
  }
  const body = await r.json().catch(() => null);
  S.authOn = !(r.status === 404 && body && body.error === 'auth_off');
  if (body && body.node === 'participant') {
    S.participant = body.participant_id;
    document.title = `twopc participant ${S.participant}`;
    $('kind').textContent = `participant ${S.participant}`;
    $('cluster-tab').textContent = 'Participant';
  }
  if (!S.authOn) return showApp();
  S.auth = restore();
  if (S.auth) showApp();
  else showLogin('');
}

start();
