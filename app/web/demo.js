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
  for (const button of document.querySelectorAll('main button')) {
    button.disabled = status !== Status.OPEN;
  }
});
live.on('welcome', (welcome) => {
  $('client-id').textContent = welcome.clientId;
});

function showError(err) {
  $('error').textContent = err.code === 'offline' ? 'Not connected: try again when the banner is green.' : `${err.code}: ${err.message}`;
}

function guard(promise) {
  $('error').textContent = '';
  promise.catch(showError);
}

function meta(prefix, component) {
  $(`${prefix}-version`).textContent = component.version;
  $(`${prefix}-id`).textContent = component.id;
}

function noticeOnRefresh(component, label) {
  component.on('refresh', (err) => {
    const what = err.code === 'expired' || err.code === 'not_found' ? 'session expired' : `could not be restored (${err.code})`;
    $('notice').textContent = `Your ${label} ${what}; a fresh one was started.`;
  });
  component.on('error', showError);
}

async function setupCounter() {
  const counter = await live.mount('counter', { initial: 0 });
  const render = (state) => {
    $('counter-count').textContent = state.count;
    $('counter-step').value = state.step;
    meta('counter', counter);
  };
  counter.on('state', render);
  noticeOnRefresh(counter, 'counter');
  render(counter.state);
  $('counter-inc').onclick = () => guard(counter.call('increment'));
  $('counter-dec').onclick = () => guard(counter.call('decrement'));
  $('counter-reset').onclick = () => guard(counter.call('reset'));
  $('counter-step').onchange = (ev) => guard(counter.call('setStep', Number.parseInt(ev.target.value, 10) || 0));
}

async function setupToggle() {
  const toggle = await live.mount('toggle');
  const render = (state) => {
    $('toggle-state').textContent = state.on ? 'On' : 'Off';
    meta('toggle', toggle);
  };
  toggle.on('state', render);
  noticeOnRefresh(toggle, 'toggle');
  render(toggle.state);
  $('toggle-btn').onclick = () => guard(toggle.call('toggle'));
}

async function setupTodo() {
  const todo = await live.mount('todo');
  const render = (state) => {
    const list = $('todo-list');
    list.replaceChildren(...state.items.map((item, index) => {
      const li = document.createElement('li');
      li.className = item.done ? 'done' : '';
      const box = document.createElement('input');
      box.type = 'checkbox';
      box.checked = item.done;
      box.onchange = () => guard(todo.call('toggle', index));
      const text = document.createElement('span');
      text.textContent = item.text;
      const remove = document.createElement('button');
      remove.className = 'secondary';
      remove.textContent = 'Remove';
      remove.disabled = live.status !== Status.OPEN;
      remove.onclick = () => guard(todo.call('remove', index));
      li.append(box, text, remove);
      return li;
    }));
    meta('todo', todo);
  };
  todo.on('state', render);
  noticeOnRefresh(todo, 'todo list');
  render(todo.state);
  $('todo-form').onsubmit = (ev) => {
    ev.preventDefault();
    const input = $('todo-input');
    const text = input.value;
    guard(todo.call('add', text).then(() => { input.value = ''; }));
  };
}

Promise.all([setupCounter(), setupToggle(), setupTodo()])
  .then(() => { document.body.dataset.ready = 'true'; })
  .catch(showError);
