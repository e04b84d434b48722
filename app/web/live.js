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
// once with code "offline"; nothing is queued or replayed. The client asks
// for state changes as JSON Patches, and fetches the full state whenever a
// patch does not fit the version it has.

const TOKEN_KEY = 'livebolt.token';
const SLOTS_KEY = 'livebolt.components';

/** Connection states reported to 'status' listeners. */
export const Status = Object.freeze({
  CONNECTING: 'connecting',
  OPEN: 'open',
  RECONNECTING: 'reconnecting',
  CLOSED: 'closed',
});

// Component events that the library emits itself. A server event with one
// of these names reaches listeners only through on('event').
const RESERVED_EVENTS = new Set(['state', 'event', 'refresh', 'error', 'unmounted', 'broadcast']);

// Client-side error codes that mean "the connection went away", after which
// an operation can be retried once it is open again.
const CONNECTION_CODES = new Set(['offline', 'disconnected']);

/** LiveError is a protocol error from the server, or a client-side one:
 * "offline", "disconnected", "closed", "timeout" or "unmounted". */
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

/** Component is one mounted live component. Events:
 *  - 'state' (state, component): a new acknowledged state;
 *  - 'event' (name, data, component) and '<name>' (data, component): an
 *    event the component emitted to this client;
 *  - 'broadcast' (name, data, component): an event sent to every client
 *    with this component type mounted;
 *  - 'refresh' (error, component): the server could not restore this
 *    component, so a fresh one was mounted in its slot;
 *  - 'error' (error, component): a failure outside a call, such as a
 *    hydration that failed after a reconnect;
 *  - 'unmounted' (component). */
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
    /** The LiveError of a stored component that could not be restored when
     * mount() created this one, or null. Read it after mount() resolves. */
    this.refreshed = null;
    this.unmounted = false;
  }

  /** call runs an action and resolves with the acknowledged state, or
   * rejects with a LiveError. The action's result is in lastResult. */
  async call(action, ...args) {
    const reply = await this.invoke(action, ...args);
    return reply.state;
  }

  /** invoke runs an action and resolves with {state, version, result}. */
  async invoke(action, ...args) {
    if (this.unmounted) throw new LiveError('unmounted', `component ${this.component} was unmounted`);
    try {
      const reply = await this.client.request({ type: 'call', id: this.id, action, args }, this);
      this.lastResult = reply.result;
      // A patch reply carries no state: the component applied it already.
      return { state: this.state, version: this.version, result: reply.result };
    } catch (err) {
      if (err instanceof LiveError && err.requiresRefresh) {
        // The server no longer has this component on this connection: get
        // it back (or a fresh one) for the next call, and still report the
        // failed call.
        this.client.attach(this).catch((e) => this.emit('error', e, this));
      }
      throw err;
    }
  }

  /** unmount destroys the component on the server and removes its stored
   * entry. */
  async unmount() {
    if (this.unmounted) return;
    await this.client.request({ type: 'unmount', id: this.id });
    writeSlot(this.slot, null);
    this.client.components.delete(this.slot);
    this.unmounted = true;
    this.id = null;
    this.state = null;
    this.emit('unmounted', this);
  }

  apply(msg) {
    if (msg.id) this.id = msg.id;
    if (msg.fingerprint) this.fingerprint = msg.fingerprint;
    this.state = msg.state;
    this.version = msg.version;
    writeSlot(this.slot, { id: this.id, component: this.component, fingerprint: this.fingerprint });
    this.emit('state', this.state, this);
  }

  /** applyPatch applies a patch message to the state it was made from. It
   * returns false, changing nothing, when this copy is of another version
   * or the patch does not apply; the caller then fetches the full state. */
  applyPatch(msg) {
    if (this.version !== msg.base) return false;
    let next;
    try {
      next = applyJSONPatch(this.state, msg.patch);
    } catch (err) {
      console.error('livebolt: patch does not apply; fetching the full state', err);
      return false;
    }
    this.state = next;
    this.version = msg.version;
    this.emit('state', this.state, this);
    return true;
  }
}

/** applyJSONPatch returns doc with the add, remove and replace operations
 * of a JSON Patch (RFC 6902) applied, leaving doc unchanged. It throws on a
 * path that does not resolve or an operation it does not know. */
export function applyJSONPatch(doc, ops) {
  if (!Array.isArray(ops)) throw new Error('a patch is an array of operations');
  let root = structuredClone(doc);
  for (const op of ops) {
    if (op.path === '') {
      if (op.op !== 'add' && op.op !== 'replace') throw new Error(`${op.op} cannot target the whole document`);
      root = structuredClone(op.value);
      continue;
    }
    if (typeof op.path !== 'string' || op.path[0] !== '/') throw new Error(`bad path ${JSON.stringify(op.path)}`);
    const tokens = op.path.slice(1).split('/').map((t) => t.replaceAll('~1', '/').replaceAll('~0', '~'));
    const last = tokens.pop();
    let parent = root;
    for (const token of tokens) {
      if (parent === null || typeof parent !== 'object' || !Object.hasOwn(parent, token)) {
        throw new Error(`path ${op.path} does not exist`);
      }
      parent = parent[token];
    }
    if (Array.isArray(parent)) {
      const index = Number(last);
      const max = op.op === 'add' ? parent.length : parent.length - 1;
      if (!/^(0|[1-9][0-9]*)$/.test(last) || index > max) throw new Error(`bad index in ${op.path}`);
      if (op.op === 'add') parent.splice(index, 0, op.value);
      else if (op.op === 'replace') parent[index] = op.value;
      else if (op.op === 'remove') parent.splice(index, 1);
      else throw new Error(`unknown operation ${op.op}`);
    } else if (parent !== null && typeof parent === 'object') {
      if (op.op !== 'add' && !Object.hasOwn(parent, last)) throw new Error(`path ${op.path} does not exist`);
      // defineProperty, not assignment: a key such as "__proto__" must
      // become a member, as JSON.parse makes it, not the prototype.
      if (op.op === 'add' || op.op === 'replace') {
        Object.defineProperty(parent, last, { value: op.value, writable: true, enumerable: true, configurable: true });
      } else if (op.op === 'remove') delete parent[last];
      else throw new Error(`unknown operation ${op.op}`);
    } else {
      throw new Error(`path ${op.path} goes through a value that is not an object or array`);
    }
  }
  return root;
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
    this.components = new Map(); // slot -> attached Component
    this.mounting = new Map(); // slot -> Promise<Component> of a mount in progress
    this.pending = new Map(); // ref -> {resolve, reject, timer, component}
    this.nextRef = 1;
    this.attempt = 0;
    this.ws = null;
    this.closedByUser = false;
  }

  setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this.emit('status', status);
  }

  /** open connects, sends hello and hydrates every known component. */
  open() {
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = async () => {
      try {
        await this.resume();
        this.attempt = 0;
        this.setStatus(Status.OPEN);
      } catch {
        ws.close(); // onclose schedules the next attempt
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
      this.scheduleReconnect();
    };
  }

  scheduleReconnect() {
    this.setStatus(Status.RECONNECTING);
    const { minBackoffMs, maxBackoffMs } = this.options;
    const delay = backoffDelay(this.attempt, minBackoffMs, maxBackoffMs, Math.random());
    this.attempt++;
    setTimeout(() => {
      if (!this.closedByUser) this.open();
    }, delay);
  }

  async resume() {
    const welcome = await this.send({ type: 'hello', token: localStorage.getItem(TOKEN_KEY) || undefined, features: ['patch'] });
    localStorage.setItem(TOKEN_KEY, welcome.token);
    this.clientId = welcome.clientId;
    this.emit('welcome', welcome);
    for (const component of this.components.values()) {
      try {
        await this.attach(component);
      } catch (err) {
        if (err instanceof LiveError && CONNECTION_CODES.has(err.code)) throw err;
        component.emit('error', err, component);
      }
    }
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

  /** refresh removes the stored entry of a component the server lost and
   * mounts a new one in its slot. */
  async refresh(component, err) {
    writeSlot(component.slot, null);
    component.id = null;
    component.refreshed = err;
    component.emit('refresh', err, component);
    const msg = await this.send({ type: 'mount', component: component.component, props: component.props, key: slotKey(component.slot) });
    component.apply(msg);
  }

  /** mount returns the component in slot (default: its name), hydrating
   * the one this tab had there before a reload, or mounting a new one. The
   * props are used only when a new one is mounted. While the connection is
   * down it waits for it; it rejects with "closed" after close(). */
  mount(name, props = {}, { key = name } = {}) {
    if (this.closedByUser) return Promise.reject(new LiveError('closed', 'the client was closed'));
    const existing = this.components.get(key) || null;
    if (existing) {
      if (existing.component !== name) {
        return Promise.reject(new LiveError('bad_args', `slot "${key}" contains a ${existing.component}, not a ${name}; pass another key`));
      }
      return Promise.resolve(existing);
    }
    if (this.mounting.has(key)) return this.mounting.get(key);
    const mounting = this.mountNew(name, props, key).finally(() => this.mounting.delete(key));
    this.mounting.set(key, mounting);
    return mounting;
  }

  async mountNew(name, props, key) {
    const component = new Component(this, key, name, props);
    const stored = readSlots()[key];
    if (stored && stored.component === name) {
      component.id = stored.id;
      component.fingerprint = stored.fingerprint;
    }
    for (;;) {
      await this.opened();
      try {
        await this.attach(component);
        break;
      } catch (err) {
        // The connection dropped during the attach: wait and try again.
        if (!(err instanceof LiveError) || !CONNECTION_CODES.has(err.code)) throw err;
      }
    }
    // Added only now, so a reconnect in between does not attach it twice.
    this.components.set(key, component);
    return component;
  }

  /** opened resolves when the connection is open and resumed. It rejects
   * after close(), or after timeoutMs when that is given. */
  opened(timeoutMs = 0) {
    if (this.status === Status.OPEN) return Promise.resolve(this);
    if (this.closedByUser) return Promise.reject(new LiveError('closed', 'the client was closed'));
    return new Promise((resolve, reject) => {
      let timer = null;
      const off = this.on('status', (status) => {
        if (status === Status.OPEN || status === Status.CLOSED) {
          off();
          clearTimeout(timer);
          if (status === Status.OPEN) resolve(this);
          else reject(new LiveError('closed', 'the client was closed'));
        }
      });
      if (timeoutMs > 0) {
        timer = setTimeout(() => {
          off();
          reject(new LiveError('timeout', `not connected to ${this.url} within ${timeoutMs} ms`));
        }, timeoutMs);
      }
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
        reject(new LiveError('timeout', `no reply to ${msg.type} within ${this.options.requestTimeoutMs} ms; it may still have been applied`));
      }, this.options.requestTimeoutMs);
      this.pending.set(ref, { resolve, reject, timer, component });
      ws.send(JSON.stringify({ ...msg, ref }));
    });
  }

  componentById(id) {
    for (const component of this.components.values()) {
      if (component.id === id) return component;
    }
    return null;
  }

  receive(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      console.error('livebolt: server sent invalid JSON', data);
      return;
    }
    switch (msg.type) {
      case 'event':
        this.receiveEvent(msg);
        return;
      case 'broadcast':
        this.emit('broadcast', msg);
        for (const component of this.components.values()) {
          if (component.component === msg.component) component.emit('broadcast', msg.event, msg.data, component);
        }
        return;
    }
    const waiter = msg.ref !== undefined && this.pending.get(msg.ref);
    if (!waiter) {
      this.receiveUnrequested(msg);
      return;
    }
    this.pending.delete(msg.ref);
    clearTimeout(waiter.timer);
    if (msg.type === 'error') {
      waiter.reject(new LiveError(msg.code, msg.message, msg.requiresRefresh, msg.id));
      return;
    }
    if (msg.type === 'state' && waiter.component) waiter.component.apply(msg);
    if (msg.type === 'patch' && waiter.component && !waiter.component.applyPatch(msg)) {
      // This copy missed a version: fetch the full state, then resolve.
      this.attach(waiter.component).then(() => waiter.resolve(msg), waiter.reject);
      return;
    }
    waiter.resolve(msg);
  }

  receiveEvent(msg) {
    const component = this.componentById(msg.id);
    if (!component) return;
    component.emit('event', msg.event, msg.data, component);
    if (!RESERVED_EVENTS.has(msg.event)) component.emit(msg.event, msg.data, component);
  }

  // receiveUnrequested handles a message no pending request waits for: the
  // reply to a request that timed out, or an error the server pushed.
  receiveUnrequested(msg) {
    const component = msg.id ? this.componentById(msg.id) : null;
    if (!component) return;
    if (msg.type === 'state' && msg.version > component.version) {
      component.apply(msg); // a late reply still carries the committed state
      return;
    }
    if (msg.type === 'patch' && msg.version > component.version) {
      if (!component.applyPatch(msg)) this.attach(component).catch((e) => component.emit('error', e, component));
      return;
    }
    if (msg.type === 'error' && msg.requiresRefresh) {
      // The component moved to another tab of this client: leave it there
      // and mount a fresh one here.
      const err = new LiveError(msg.code, msg.message, true, msg.id);
      this.refresh(component, err).catch((e) => component.emit('error', e, component));
    }
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
  client.open();
  return client;
}

/** connect opens a client on url and resolves once hello succeeded. While
 * the server is unreachable the client keeps retrying; pass timeoutMs to
 * give up after that long. */
export function connect(url = '/live', { timeoutMs = 0, ...options } = {}) {
  return createClient(url, options).opened(timeoutMs);
}
