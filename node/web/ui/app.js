// The console's shell: who is logged in, the hash router, the navigation.
import {get} from './api.js';
import {add, announce, clear, errorBox, fill, h} from './dom.js';
import {auditPage} from './pages/audit.js';
import {dashboardPage} from './pages/dashboard.js';
import {destinationsPage} from './pages/destinations.js';
import {jobDetailPage, jobsPage} from './pages/jobs.js';
import {pipelinesPage} from './pages/pipelines.js';
import {ruleEditorPage, rulesPage} from './pages/rules.js';

const ROUTES = [
  [/^\/dashboard$/, 'dashboard', dashboardPage],
  [/^\/jobs$/, 'jobs', jobsPage],
  [/^\/jobs\/(\d+)$/, 'jobs', jobDetailPage],
  [/^\/rules$/, 'rules', rulesPage],
  [/^\/rules\/new$/, 'rules', (main, params, context) => ruleEditorPage(main, params, context, null)],
  [/^\/rules\/(.+)$/, 'rules', (main, params, context, name) => ruleEditorPage(main, params, context, name)],
  [/^\/pipelines$/, 'pipelines', pipelinesPage],
  [/^\/destinations$/, 'destinations', destinationsPage],
  [/^\/audit$/, 'audit', auditPage],
];

const context = {user: null, role: 'viewer', canWrite: false};
let cleanup = null;

function parseHash() {
  const hash = window.location.hash.replace(/^#/, '') || '/dashboard';
  const [path, search] = hash.split('?');
  return {path, params: new URLSearchParams(search || '')};
}

async function route() {
  if (cleanup) {
    try {
      cleanup();
    } catch (error) {
      console.error(error);
    }
    cleanup = null;
  }
  const {path, params} = parseHash();
  const main = clear(document.getElementById('main'));
  const found = ROUTES.map(([pattern, page, render]) => [path.match(pattern), page, render]).find(([m]) => m);
  for (const link of document.querySelectorAll('#nav a')) {
    if (found && link.dataset.page === found[1]) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (!found) {
    add(main, h('h1', {tabindex: '-1'}, 'Not found'), h('p', {}, `No page ${path}.`));
    return;
  }
  const [match, page, render] = found;
  document.title = `${page[0].toUpperCase()}${page.slice(1)} · AI node console`;
  try {
    cleanup = (await render(main, params, context, ...match.slice(1).map(decodeURIComponent))) || null;
  } catch (error) {
    add(main, errorBox(error));
    announce(error.message, 'error');
  }
  const title = main.querySelector('h1');
  if (title) title.focus({preventScroll: true});
}

async function start() {
  const who = document.getElementById('who');
  try {
    const me = await get('/ai/me');
    context.user = me.user;
    context.role = me.role;
    context.canWrite = me.role === 'admin';
  } catch (error) {
    // Without /ai/me (no authentication configured), show the edit controls: the API decides.
    context.user = null;
    context.role = error.status === 404 ? 'admin' : 'viewer';
    context.canWrite = context.role === 'admin';
  }
  document.body.dataset.role = context.role;
  fill(who, 
    context.user ? h('span', {}, context.user, ' ') : null,
    h('span', {class: `role role-${context.role}`}, context.role === 'admin' ? 'admin' : 'read only'),
  );
  window.addEventListener('hashchange', route);
  await route();
}

start();
