// The demo page: counter, toggle and todo driven by the livebolt client.
import { createClient, Status } from '/live.js';

const $ = (id) => document.getElementById(id);

const bannerText = {
  [Status.CONNECTING]: 'Connecting…',
  [Status.OPEN]: 'Connected',
  [Status.RECONNECTING]: 'Connection lost. Reconnecting… your components are safe on the server.',
  [Status.CLOSED]: 'Disconnected.',
};

const live = createClient('/live');
live.on('status', (status) => {
  const banner = $('banner');
  banner.dataset.status = status;
  banner.textContent = bannerText[status];
  updateControls();
  if (status === Status.OPEN) {
    for (const line of document.querySelectorAll('.card .error')) line.textContent = '';
  }
});
live.on('welcome', (welcome) => {
  $('client-id').textContent = welcome.clientId;
});

// Calls in flight per card: a card's controls are disabled until the reply
// to its call arrives, so a double click cannot apply an index-based action
// twice.
const busy = new Set();

function updateControls() {
  for (const card of document.querySelectorAll('.card')) {
    const disabled = live.status !== Status.OPEN || busy.has(card.id);
    for (const control of card.querySelectorAll('button, input')) control.disabled = disabled;
  }
}

const friendly = {
  offline: 'Not connected. Try again once the connection is back.',
  disconnected: 'The connection dropped before the server answered. The component shows what the server kept.',
  rate_limited: 'Too many actions at once. Slow down a little.',
};

function showError(card, err) {
  $(`${card}-error`).textContent = friendly[err.code] || err.message;
}

// run sends one call for a card, keeping the card's controls disabled while
// it is in flight, and shows a failure next to the card.
async function run(card, promise) {
  $(`${card}-error`).textContent = '';
  busy.add(card);
  updateControls();
  try {
    return await promise();
  } catch (err) {
    showError(card, err);
    return undefined;
  } finally {
    busy.delete(card);
    updateControls();
  }
}

// Components that the server could not restore, named in one notice.
const expired = new Set();

function noteRefresh(label, err) {
  expired.add(label);
  const names = [...expired].join(', ');
  const why = err.code === 'expired' || err.code === 'not_found' ? 'expired or were removed on the server' : `could not be restored (${err.code})`;
  $('notice-text').textContent = `Your ${names}: the saved session ${why}, so a fresh one was started.`;
  $('notice').hidden = false;
}

function watch(component, card, label) {
  if (component.refreshed) noteRefresh(label, component.refreshed);
  component.on('refresh', (err) => noteRefresh(label, err));
  component.on('error', (err) => showError(card, err));
}

function meta(prefix, component) {
  $(`${prefix}-version`).textContent = component.version;
  $(`${prefix}-id`).textContent = component.id;
}

async function setupCounter() {
  const counter = await live.mount('counter', { initial: 0 });
  const render = (state) => {
    $('counter-count').textContent = state.count;
    $('counter-step').value = state.step;
    meta('counter', counter);
  };
  counter.on('state', render);
  watch(counter, 'counter', 'counter');
  render(counter.state);
  $('counter-inc').onclick = () => run('counter', () => counter.call('increment'));
  $('counter-dec').onclick = () => run('counter', () => counter.call('decrement'));
  $('counter-reset').onclick = () => run('counter', () => counter.call('reset'));
  $('counter-step').onchange = (ev) => {
    const step = Number(ev.target.value);
    if (!Number.isInteger(step) || Math.abs(step) > 1000) {
      $('counter-error').textContent = 'The step must be a whole number between -1000 and 1000.';
      ev.target.value = counter.state.step;
      return;
    }
    run('counter', () => counter.call('setStep', step));
  };
}

async function setupToggle() {
  const toggle = await live.mount('toggle');
  const render = (state) => {
    $('toggle-state').textContent = state.on ? 'On' : 'Off';
    $('toggle-btn').setAttribute('aria-pressed', String(state.on));
    meta('toggle', toggle);
  };
  toggle.on('state', render);
  watch(toggle, 'toggle', 'toggle');
  render(toggle.state);
  $('toggle-btn').onclick = () => run('toggle', () => toggle.call('toggle'));
}

async function setupTodo() {
  const todo = await live.mount('todo');
  const render = (state) => {
    const list = $('todo-list');
    $('todo-empty').hidden = state.items.length > 0;
    list.replaceChildren(...state.items.map((item, index) => {
      const li = document.createElement('li');
      li.className = item.done ? 'done' : '';
      const box = document.createElement('input');
      box.type = 'checkbox';
      box.checked = item.done;
      box.id = `todo-item-${index}`;
      box.onchange = () => {
        box.checked = item.done; // show the server's reply, not the click
        run('todo', () => todo.call('toggle', index));
      };
      const text = document.createElement('label');
      text.htmlFor = box.id;
      text.textContent = item.text;
      const remove = document.createElement('button');
      remove.className = 'secondary';
      remove.textContent = 'Remove';
      remove.setAttribute('aria-label', `Remove “${item.text}”`);
      remove.onclick = () => run('todo', () => todo.call('remove', index));
      li.append(box, text, remove);
      return li;
    }));
    meta('todo', todo);
    updateControls();
  };
  todo.on('state', render);
  watch(todo, 'todo', 'todo list');
  render(todo.state);
  $('todo-form').onsubmit = async (ev) => {
    ev.preventDefault();
    const input = $('todo-input');
    const text = input.value;
    input.value = '';
    if (await run('todo', () => todo.call('add', text)) === undefined) input.value = text;
    input.focus();
  };
}

$('notice-close').onclick = () => {
  expired.clear();
  $('notice').hidden = true;
};

Promise.all([setupCounter(), setupToggle(), setupTodo()])
  .then(() => { document.body.dataset.ready = 'true'; })
  .catch((err) => { $('page-error').textContent = `The demo could not start: ${err.message}`; });
