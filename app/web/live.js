// livebolt browser client: one ES module, no dependencies.
//
//   import { connect } from '/live.js';
//   const live = await connect('/live');
//   const counter = await live.mount('counter', { initial: 5 });
//   counter.on('state', (state) => render(state));
//   await counter.call('increment');
//
// The client token is kept in localStorage, so every tab of a browser
// profile is the same client. Each mounted component's id and fingerprint
// are kept in sessionStorage under its slot key, so a reload, a dropped
// connection or a server restart hydrates the same component instead of
// mounting a new one. Calls made while the connection is down reject at
// once with code "offline"; nothing is queued or replayed.

const TOKEN_KEY = 'livebolt.token';
const SLOTS_KEY = 'livebolt.components';

/** Connection states reported to 'status' listeners. */
export const Status = Object.freeze({
  CONNECTING: 'connecting',
  OPEN: 'open',
  RECONNECTING: 'reconnecting',
  CLOSED: 'closed',
});

/** LiveError is a protocol error from the server, or a client-side one
 * ("offline", "disconnected", "closed", "timeout"). */
export class LiveError extends Error {
  constructor(code, message, requiresRefresh = false, id = undefined) {
    super(message);
    this.name = 'LiveError';
    this.code = code;
    this.requiresRefresh = requiresRefresh;
    this.id = id;
  }
}

class Emitter {
  constructor() {
    this.listeners = new Map();
  }

  /** on registers fn for event and returns a function that removes it. */
  on(event, fn) {
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event).add(fn);
    return () => this.listeners.get(event).delete(fn);
  }

  emit(event, ...args) {
    for (const fn of this.listeners.get(event) || []) {
      try {
        fn(...args);
      } catch (err) {
        console.error(`livebolt: ${event} listener failed`, err);
      }
    }
  }
}

function readSlots() {
  try {
    return JSON.parse(sessionStorage.getItem(SLOTS_KEY) || '{}');
  } catch {
    return {};
  }
}

function writeSlot(slot, entry) {
  const slots = readSlots();
  if (entry) slots[slot] = entry;
  else delete slots[slot];
  sessionStorage.setItem(SLOTS_KEY, JSON.stringify(slots));
}

/** Component is one mounted live component. Listen with on('state'),
 * on('event'), on('refresh') (the server lost it and a fresh one was
 * mounted) and on(<event name>) for events the component emits. */
export class Component extends Emitter {
  constructor(client, slot, name, props) {
    super();
    this.client = client;
    this.slot = slot;
    this.component = name;
    this.props = props;
    this.id = null;
    this.fingerprint = null;
    this.state = null;
    this.version = 0;
    this.lastResult = undefined;
  }

  /** call runs an action and resolves with the acknowledged state, or
   * rejects with a LiveError. The action's result is in lastResult. */
  async call(action, ...args) {
    try {
      const reply = await this.client.request({ type: 'call', id: this.id, action, args }, this);
      this.lastResult = reply.result;
      return this.state;
    } catch (err) {
      if (err instanceof LiveError && err.requiresRefresh) {
        // The server lost this component (expired or swept): start afresh
        // so the page keeps working, and still report the failed call.
        this.client.refresh(this, err).catch((e) => this.emit('error', e, this));
      }
      throw err;
    }
  }

  /** unmount destroys the component on the server and forgets it. */
  async unmount() {
    await this.client.request({ type: 'unmount', id: this.id });
    writeSlot(this.slot, null);
    this.client.components.delete(this.slot);
  }

  apply(msg) {
    if (msg.id) this.id = msg.id;
    if (msg.fingerprint) this.fingerprint = msg.fingerprint;
    this.state = msg.state;
    this.version = msg.version;
    writeSlot(this.slot, { id: this.id, component: this.component, fingerprint: this.fingerprint });
    this.emit('state', this.state, this);
  }
}

/** LiveClient is one connection to a livebolt server, reconnecting by
 * itself. Listen with on('status'), on('broadcast') and on('welcome'). */
export class LiveClient extends Emitter {
  constructor(url, options = {}) {
    super();
    this.url = new URL(url, location.href);
    this.url.protocol = this.url.protocol.replace(/^http/, 'ws');
    this.options = {
      minBackoffMs: 250,
      maxBackoffMs: 5000,
      requestTimeoutMs: 15000,
      ...options,
    };
    this.status = Status.CONNECTING;
    this.clientId = null;
    this.components = new Map(); // slot -> Component
    this.pending = new Map(); // ref -> {resolve, reject, timer, component}
    this.nextRef = 1;
    this.attempt = 0;
    this.ws = null;
    this.closedByUser = false;
    this.ready = null; // resolves when hello and hydration are done
  }

  setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this.emit('status', status);
  }

  /** open connects, sends hello and hydrates every known component. */
  open() {
    this.ready = new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      this.ws = ws;
      let welcomed = false;
      ws.onopen = async () => {
        try {
          await this.resume();
          welcomed = true;
          this.attempt = 0;
          this.setStatus(Status.OPEN);
          resolve(this);
        } catch (err) {
          reject(err);
          ws.close();
        }
      };
      ws.onmessage = (ev) => this.receive(ev.data);
      ws.onclose = (ev) => {
        this.failPending(new LiveError('disconnected', `connection closed (code ${ev.code}) before the server replied`));
        if (this.ws !== ws) return;
        this.ws = null;
        if (this.closedByUser) {
          this.setStatus(Status.CLOSED);
          return;
        }
        if (!welcomed && this.status === Status.CONNECTING && this.attempt === 0) {
          // The first connection attempt failed: keep trying in the background
          // but let connect() report it.
          reject(new LiveError('disconnected', `could not connect to ${this.url}`));
        }
        this.scheduleReconnect();
      };
    });
    return this.ready;
  }

  scheduleReconnect() {
    this.setStatus(Status.RECONNECTING);
    const { minBackoffMs, maxBackoffMs } = this.options;
    const delay = backoffDelay(this.attempt, minBackoffMs, maxBackoffMs, Math.random());
    this.attempt++;
    setTimeout(() => {
      if (!this.closedByUser) this.open().catch(() => {});
    }, delay);
  }

  async resume() {
    const welcome = await this.send({ type: 'hello', token: localStorage.getItem(TOKEN_KEY) || undefined });
    localStorage.setItem(TOKEN_KEY, welcome.token);
    this.clientId = welcome.clientId;
    this.emit('welcome', welcome);
    // Map iteration also visits components mounted while this runs.
    for (const component of this.components.values()) {
      try {
        await this.attach(component);
      } catch (err) {
        component.emit('error', err, component);
      }
    }
  }

  /** refresh forgets a component the server lost and mounts it afresh. */
  async refresh(component, err) {
    writeSlot(component.slot, null);
    component.id = null;
    component.emit('refresh', err, component);
    const msg = await this.send({ type: 'mount', component: component.component, props: component.props, key: slotKey(component.slot) });
    component.apply(msg);
  }

  /** attach hydrates a component with a known id, or mounts it. A hydration
   * the server rejects with requiresRefresh mounts a fresh one. */
  async attach(component) {
    if (component.id) {
      try {
        const msg = await this.send({ type: 'hydrate', id: component.id, fingerprint: component.fingerprint });
        component.apply(msg);
        return;
      } catch (err) {
        if (!(err instanceof LiveError) || !err.requiresRefresh) throw err;
        await this.refresh(component, err);
        return;
      }
    }
    const msg = await this.send({ type: 'mount', component: component.component, props: component.props, key: slotKey(component.slot) });
    component.apply(msg);
  }

  /** mount returns the component in slot (default: its name), hydrating
   * the one this tab had there before a reload, or mounting a new one. */
  async mount(name, props = {}, { key = name } = {}) {
    if (this.components.has(key)) return this.components.get(key);
    const component = new Component(this, key, name, props);
    const stored = readSlots()[key];
    if (stored && stored.component === name) {
      component.id = stored.id;
      component.fingerprint = stored.fingerprint;
    }
    this.components.set(key, component);
    if (this.status !== Status.OPEN) {
      // resume() attaches every known component once the connection opens.
      await this.opened();
      if (component.state !== null) return component;
    }
    try {
      await this.attach(component);
    } catch (err) {
      this.components.delete(key);
      throw err;
    }
    return component;
  }

  /** opened resolves when the connection is open and resumed. */
  opened() {
    if (this.status === Status.OPEN) return Promise.resolve(this);
    return new Promise((resolve) => {
      const off = this.on('status', (status) => {
        if (status === Status.OPEN) {
          off();
          resolve(this);
        }
      });
    });
  }

  /** request sends a message on the open connection; it rejects with
   * "offline" at once while the connection is down. */
  request(msg, component) {
    if (this.status !== Status.OPEN) {
      return Promise.reject(new LiveError('offline', `not connected (status ${this.status}); try again when the connection is open`));
    }
    return this.send(msg, component);
  }

  send(msg, component) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new LiveError('offline', 'not connected'));
    }
    const ref = this.nextRef++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(ref);
        reject(new LiveError('timeout', `no reply to ${msg.type} within ${this.options.requestTimeoutMs} ms`));
      }, this.options.requestTimeoutMs);
      this.pending.set(ref, { resolve, reject, timer, component });
      ws.send(JSON.stringify({ ...msg, ref }));
    });
  }

  receive(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      console.error('livebolt: server sent invalid JSON', data);
      return;
    }
    if (msg.type === 'event') {
      const component = [...this.components.values()].find((c) => c.id === msg.id);
      if (component) {
        component.emit('event', msg.event, msg.data, component);
        component.emit(msg.event, msg.data, component);
      }
      return;
    }
    if (msg.type === 'broadcast') {
      this.emit('broadcast', msg);
      return;
    }
    const waiter = msg.ref !== undefined && this.pending.get(msg.ref);
    if (!waiter) return;
    this.pending.delete(msg.ref);
    clearTimeout(waiter.timer);
    if (msg.type === 'error') {
      waiter.reject(new LiveError(msg.code, msg.message, msg.requiresRefresh, msg.id));
      return;
    }
    if (msg.type === 'state' && waiter.component) waiter.component.apply(msg);
    waiter.resolve(msg);
  }

  failPending(err) {
    for (const [ref, waiter] of this.pending) {
      clearTimeout(waiter.timer);
      waiter.reject(err);
      this.pending.delete(ref);
    }
  }

  /** close ends the connection for good. */
  close() {
    this.closedByUser = true;
    if (this.ws) this.ws.close(1000, 'client closed');
    else this.setStatus(Status.CLOSED);
  }
}

/** backoffDelay returns the wait in ms before reconnect attempt number
 * attempt (0 first): half the minimum plus a random share (random in [0, 1))
 * of an exponential backoff capped at maxMs. The jitter spreads the clients
 * of a restarted server over time instead of all at one instant. */
export function backoffDelay(attempt, minMs, maxMs, random) {
  const cap = Math.min(maxMs, minMs * 2 ** attempt);
  return minMs / 2 + random * cap;
}

function slotKey(slot) {
  return slot.replace(/[^A-Za-z0-9_-]/g, '').slice(0, 64);
}

/** createClient starts connecting to url and returns the client at once, so
 * a page can listen to 'status' before the first connection opens. */
export function createClient(url = '/live', options = {}) {
  const client = new LiveClient(url, options);
  client.open().catch(() => {});
  return client;
}

/** connect opens a client on url and resolves once hello succeeded. While
 * the server is unreachable the client keeps retrying. */
export function connect(url = '/live', options = {}) {
  return createClient(url, options).opened();
}
