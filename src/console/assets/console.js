// Switchboard console: sign-in with an operator token and the live alert board.
//
// Rules kept here: dynamic text goes in with textContent only (never as
// markup); the token lives in sessionStorage only and travels in the
// Authorization header, never in a URL; errors are shown in the page.
'use strict';

(function () {
  const API = '/api/v1';
  const TOKEN_KEY = 'switchboard.operatorToken';
  // A silent stream (no event, no keep-alive comment) is reopened after this.
  const STREAM_SILENCE_MS = 45000;
  const RETRY_MIN_MS = 1000;
  const RETRY_MAX_MS = 15000;
  const PRIORITY_RANK = { stat: 0, asap: 1, urgent: 2, routine: 3 };

  // ---- Session: where the credential lives. A later sign-in with user
  // accounts replaces this object (and the sign-in form) only.
  const session = {
    token() {
      return sessionStorage.getItem(TOKEN_KEY);
    },
    signIn(token) {
      sessionStorage.setItem(TOKEN_KEY, token);
    },
    signOut() {
      sessionStorage.removeItem(TOKEN_KEY);
    },
    headers(extra) {
      const h = Object.assign({}, extra || {});
      const t = this.token();
      if (t) h.Authorization = 'Bearer ' + t;
      return h;
    },
  };

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // ---- API

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function errorOf(res) {
    let text = 'the gateway answered ' + res.status;
    try {
      const j = await res.json();
      if (j && typeof j.error === 'string') text = j.error;
    } catch (_) {
      // Not JSON: keep the status.
    }
    return new ApiError(res.status, text);
  }

  async function api(method, path, body) {
    const init = {
      method,
      headers: session.headers(body ? { 'Content-Type': 'application/json' } : {}),
      cache: 'no-store',
      credentials: 'omit',
    };
    if (body) init.body = JSON.stringify(body);
    let res;
    try {
      res = await fetch(API + path, init);
    } catch (_) {
      throw new ApiError(0, 'the gateway cannot be reached');
    }
    if (!res.ok) throw await errorOf(res);
    return res.json();
  }

  // ---- Server-sent events over fetch (EventSource cannot send a header).

  // Returns a function fed with decoded text chunks; calls onEvent(type,
  // data) per complete event. Comments (": ...") are skipped.
  function sseParser(onEvent) {
    let buf = '';
    let type = '';
    let data = [];
    return function feed(chunk) {
      buf += chunk;
      for (;;) {
        const m = /\r\n|\r|\n/.exec(buf);
        if (!m) return;
        // A lone CR at the end may be the first half of CRLF.
        if (m[0] === '\r' && m.index === buf.length - 1) return;
        const line = buf.slice(0, m.index);
        buf = buf.slice(m.index + m[0].length);
        if (line === '') {
          if (data.length) onEvent(type || 'message', data.join('\n'));
          type = '';
          data = [];
          continue;
        }
        if (line[0] === ':') continue;
        const c = line.indexOf(':');
        const field = c < 0 ? line : line.slice(0, c);
        let value = c < 0 ? '' : line.slice(c + 1);
        if (value[0] === ' ') value = value.slice(1);
        if (field === 'event') type = value;
        else if (field === 'data') data.push(value);
      }
    };
  }

  const live = {
    controller: null,
    retryMs: RETRY_MIN_MS,
    retryTimer: null,
    silenceTimer: null,
    skewMs: 0, // server clock minus this browser's clock

    start() {
      this.stop();
      this.retryMs = RETRY_MIN_MS;
      this.run();
    },

    stop() {
      clearTimeout(this.retryTimer);
      clearTimeout(this.silenceTimer);
      const c = this.controller;
      this.controller = null;
      if (c) c.abort();
    },

    heard(controller) {
      clearTimeout(this.silenceTimer);
      this.silenceTimer = setTimeout(() => controller.abort(), STREAM_SILENCE_MS);
    },

    async run() {
      const controller = new AbortController();
      this.controller = controller;
      setConnection(false, 'Connecting…');
      try {
        let res;
        try {
          res = await fetch(API + '/alerts/stream', {
            headers: session.headers({ Accept: 'text/event-stream' }),
            cache: 'no-store',
            credentials: 'omit',
            signal: controller.signal,
          });
        } catch (_) {
          throw new ApiError(0, 'the gateway cannot be reached');
        }
        if (!res.ok || !res.body) throw await errorOf(res);
        const date = Date.parse(res.headers.get('Date') || '');
        if (!Number.isNaN(date)) this.skewMs = date - Date.now();
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        const feed = sseParser(onStreamEvent);
        this.retryMs = RETRY_MIN_MS;
        setConnection(true, 'Live');
        this.heard(controller);
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          this.heard(controller);
          feed(value);
        }
        throw new ApiError(0, 'the live stream ended');
      } catch (e) {
        clearTimeout(this.silenceTimer);
        if (this.controller !== controller) return; // stopped on purpose
        if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
          showSignIn(e.message);
          return;
        }
        setConnection(false, 'Reconnecting…');
        this.retryTimer = setTimeout(() => this.run(), this.retryMs);
        this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
      }
    },

    now() {
      return Date.now() + this.skewMs;
    },
  };

  function onStreamEvent(type, data) {
    if (type === 'snapshot') {
      let body;
      try {
        body = JSON.parse(data);
      } catch (_) {
        showError('The live stream sent something unreadable; waiting for the next update.');
        return;
      }
      board.render(Array.isArray(body.alerts) ? body.alerts : []);
      clearError('stream');
    } else if (type === 'unavailable') {
      showError('The gateway cannot read alerts right now; the board will update when it can.', 'stream');
    }
  }

  // ---- The board

  function byUrgency(a, b) {
    const pa = PRIORITY_RANK[a.priority] ?? 9;
    const pb = PRIORITY_RANK[b.priority] ?? 9;
    if (pa !== pb) return pa - pb;
    return String(a.created_at).localeCompare(String(b.created_at)) || a.id - b.id;
  }

  function fmtDuration(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const ss = String(s % 60).padStart(2, '0');
    return h > 0 ? h + ':' + String(m).padStart(2, '0') + ':' + ss : m + ':' + ss;
  }

  function place(a) {
    const parts = [a.unit, a.room].filter((x) => typeof x === 'string' && x !== '');
    return parts.join(' / ');
  }

  const board = {
    rows: new Map(), // alert id -> { tr, cells, alert }
    seen: new Set(),
    first: true,

    render(alerts) {
      alerts = alerts.slice().sort(byUrgency);
      const tbody = $('alert-rows');
      const ids = new Set();
      const newStat = [];
      let anyPlace = false;
      let position = 0;
      for (const a of alerts) {
        ids.add(a.id);
        if (place(a)) anyPlace = true;
        let row = this.rows.get(a.id);
        if (!row) {
          row = this.create(a.id);
          this.rows.set(a.id, row);
        }
        this.update(row, a);
        // Urgency order; a row already in place is not moved (moving it
        // would take the keyboard focus away from its controls).
        const here = tbody.children[position] || null;
        if (here !== row.tr) tbody.insertBefore(row.tr, here);
        position += 1;
        if (a.priority === 'stat' && !this.seen.has(a.id)) newStat.push(a);
        this.seen.add(a.id);
      }
      for (const [id, row] of this.rows) {
        if (!ids.has(id)) {
          row.tr.remove();
          this.rows.delete(id);
        }
      }
      $('where-col').hidden = !anyPlace;
      for (const row of this.rows.values()) row.cells.where.hidden = !anyPlace;
      $('empty').hidden = alerts.length > 0;
      if (newStat.length && !this.first) {
        announce(newStat.map((a) => 'New STAT alert ' + a.id + ': ' + a.rule + '.').join(' '));
      } else if (newStat.length) {
        announce(newStat.length + ' open STAT alert' + (newStat.length > 1 ? 's' : '') + '.');
      }
      this.first = false;
      this.tick();
    },

    create(id) {
      const tr = el('tr', { 'data-alert-id': String(id) });
      const cells = {};
      for (const name of ['priority', 'id', 'rule', 'where', 'state', 'tier', 'deadline', 'told', 'accepted', 'actions']) {
        cells[name] = el('td', { 'data-field': name });
        tr.appendChild(cells[name]);
      }
      cells.id.textContent = '#' + id;
      const select = el('select', { 'data-role': 'member', 'aria-label': 'Member, for alert ' + id });
      const accept = el('button', { type: 'button', 'data-action': 'accept', 'aria-label': 'Accept alert ' + id }, 'Accept');
      const decline = el('button', { type: 'button', 'data-action': 'decline', 'aria-label': 'Decline alert ' + id }, 'Decline');
      const behalf = el('button', { type: 'button', 'data-action': 'on-behalf', 'aria-label': 'Acknowledge on behalf, alert ' + id }, 'Acknowledge on behalf');
      const wrap = el('div', { class: 'actions' });
      wrap.append(select, accept, decline, behalf);
      cells.actions.appendChild(wrap);
      const row = { tr, cells, select, buttons: [accept, decline, behalf], alert: null, busy: false };
      accept.addEventListener('click', () => act(row, 'accept', false));
      decline.addEventListener('click', () => act(row, 'decline', false));
      behalf.addEventListener('click', () => act(row, 'accept', true));
      return row;
    },

    update(row, a) {
      row.alert = a;
      const c = row.cells;
      row.tr.className = [a.priority === 'stat' ? 'stat' : '', a.state === 'accepted' ? 'accepted' : '']
        .filter(Boolean)
        .join(' ');
      row.tr.dataset.state = a.state;
      row.tr.dataset.tier = String(a.tier);
      c.priority.replaceChildren(el('span', { class: 'badge ' + a.priority }, a.priority.toUpperCase()));
      c.rule.textContent = a.rule + (a.count > 1 ? ' (\u00d7' + a.count + ')' : '');
      c.where.textContent = place(a) || '\u2014';
      c.state.textContent = a.state + (a.late ? ' (late)' : '');
      c.state.className = 'state-' + a.state;
      // Tiers are counted from 1 for people; the API counts from 0.
      c.tier.textContent = String(a.tier + 1) + (a.round > 0 ? ' (round ' + (a.round + 1) + ')' : '');
      c.deadline.dataset.deadline = a.deadline || '';
      c.told.textContent = (a.told || []).join(', ') || '\u2014';
      c.accepted.textContent = a.accepted_by || '\u2014';
      // Member choices: everyone told, in order; keep the current choice.
      const told = a.told || [];
      const current = row.select.value;
      const have = Array.from(row.select.options).map((o) => o.value);
      if (have.join('\n') !== told.join('\n')) {
        row.select.replaceChildren(...told.map((m) => el('option', { value: m }, m)));
        if (told.includes(current)) row.select.value = current;
      }
      for (const b of row.buttons) b.disabled = row.busy || told.length === 0;
    },

    // Countdowns, once a second, against the gateway's clock.
    tick() {
      const now = live.now();
      for (const row of this.rows.values()) {
        const cell = row.cells.deadline;
        const d = Date.parse(cell.dataset.deadline || '');
        if (Number.isNaN(d)) {
          cell.textContent = '\u2014';
          cell.className = 'countdown';
          continue;
        }
        const left = d - now;
        cell.textContent = left >= 0 ? 'in ' + fmtDuration(left) : 'overdue ' + fmtDuration(-left);
        cell.className = left >= 0 ? 'countdown' : 'countdown overdue';
      }
    },

    clear() {
      for (const row of this.rows.values()) row.tr.remove();
      this.rows.clear();
      this.seen.clear();
      this.first = true;
      $('empty').hidden = false;
    },
  };

  // The board changes only from the stream: an action's answer is not
  // applied here, so what the board shows is what the gateway recorded.
  async function act(row, action, onBehalf) {
    const member = row.select.value;
    const id = row.alert && row.alert.id;
    if (!member || id === undefined) return;
    row.busy = true;
    for (const b of row.buttons) b.disabled = true;
    try {
      const body = { action, member };
      if (onBehalf) body.on_behalf = true;
      await api('POST', '/alerts/' + encodeURIComponent(id) + '/ack', body);
      clearError('action');
    } catch (e) {
      if (e.status === 401) {
        showSignIn(e.message);
        return;
      }
      const what = onBehalf ? 'acknowledge on behalf of ' : action + ' for ';
      showError('Alert ' + id + ': could not ' + what + member + ': ' + e.message, 'action');
    } finally {
      row.busy = false;
      if (row.alert) board.update(row, row.alert);
    }
  }

  // ---- Page state

  let errorKind = null;

  function showError(text, kind) {
    errorKind = kind || null;
    $('board-error-text').textContent = text;
    $('board-error').hidden = false;
  }

  function clearError(kind) {
    if (kind && errorKind !== kind) return;
    errorKind = null;
    $('board-error').hidden = true;
    $('board-error-text').textContent = '';
  }

  function announce(text) {
    const a = $('announcer');
    a.textContent = '';
    // A fresh node so that screen readers announce a repeat too.
    setTimeout(() => {
      a.textContent = text;
    }, 50);
  }

  function setConnection(ok, text) {
    const c = $('connection');
    c.hidden = false;
    c.textContent = text;
    c.className = 'connection ' + (ok ? 'live' : 'down');
  }

  function showSignIn(message) {
    live.stop();
    session.signOut();
    board.clear();
    clearError();
    $('board').hidden = true;
    $('sign-out').hidden = true;
    $('connection').hidden = true;
    $('sign-in').hidden = false;
    const err = $('sign-in-error');
    err.textContent = message || '';
    err.hidden = !message;
    $('token').value = '';
    $('token').focus();
  }

  function showBoard() {
    $('sign-in').hidden = true;
    $('sign-in-error').hidden = true;
    $('board').hidden = false;
    $('sign-out').hidden = false;
    live.start();
  }

  async function onSignIn(ev) {
    ev.preventDefault();
    const token = $('token').value.trim();
    if (!token) return;
    const button = $('sign-in-button');
    button.disabled = true;
    session.signIn(token);
    try {
      // Checks the token (and its alerts:read permission) before the board opens.
      await api('GET', '/alerts');
      $('token').value = '';
      showBoard();
    } catch (e) {
      showSignIn(e.message);
    } finally {
      button.disabled = false;
    }
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('sign-in-form').addEventListener('submit', onSignIn);
    $('sign-out').addEventListener('click', () => showSignIn(''));
    $('board-error-dismiss').addEventListener('click', () => clearError());
    setInterval(() => board.tick(), 1000);
    if (session.token()) showBoard();
    else showSignIn('');
  });
})();
