// Dashboard: queue depth, jobs and deliveries per status, recent failures.
import {get} from '../api.js';
import {add, badge, empty, errorBox, fill, h, heading, table, when} from '../dom.js';
import {every} from './refresh.js';

const JOB_STATUSES = ['queued', 'running', 'done', 'failed', 'cancelled'];

function counts(title, values, order, link) {
  const names = [...order.filter((name) => name in values), ...Object.keys(values).filter((name) => !order.includes(name))];
  return h(
    'section',
    {class: 'card', 'aria-label': title},
    h('h2', {}, title),
    names.length === 0
      ? empty('None yet.')
      : h(
          'dl',
          {class: 'counts'},
          names.map((name) => [
            h('dt', {}, link ? h('a', {href: link(name)}, badge(name)) : badge(name)),
            h('dd', {'data-status': name}, String(values[name])),
          ]),
        ),
  );
}

export async function dashboardPage(main) {
  const body = h('div', {class: 'dashboard'});
  const updated = h('p', {class: 'muted small', 'aria-live': 'off'});
  add(main, heading('Dashboard', updated), body);

  const load = async () => {
    let data;
    try {
      data = await get('/ai/dashboard');
    } catch (error) {
      fill(body, errorBox(error));
      return;
    }
    updated.textContent = `Updated ${new Date().toLocaleTimeString()} · refreshes every 5 s`;
    const failures = data.recent_failures || [];
    fill(body, 
      h(
        'div',
        {class: 'cards'},
        h('section', {class: 'card metric'}, h('h2', {}, 'Queue depth'), h('p', {class: 'big', id: 'queue-depth'}, String(data.queue_depth ?? 0))),
        h('section', {class: 'card metric'}, h('h2', {}, 'Studies waiting for series'), h('p', {class: 'big'}, String(data.waiting_studies ?? 0))),
        counts('Jobs', data.jobs || {}, JOB_STATUSES, (status) => `#/jobs?status=${status}`),
        counts('Deliveries', data.deliveries || {}, ['pending', 'sending', 'delivered', 'failed'], null),
      ),
      h(
        'section',
        {class: 'card wide', 'aria-label': 'Recent failures'},
        h('h2', {}, 'Recent failures'),
        failures.length === 0
          ? empty('No failures.')
          : table(
              ['When', 'What', 'Job', 'Pipeline', 'Destination', 'Error'],
              failures.map((failure) => [
                when(failure.at),
                failure.kind === 'delivery' ? 'delivery' : 'job',
                h('a', {href: `#/jobs/${failure.job_id}`}, `Job ${failure.job_id}`),
                failure.pipeline || '–',
                failure.destination || '–',
                h('span', {class: 'error-text'}, failure.error || ''),
              ]),
              'Recent failures',
            ),
      ),
    );
  };
  return every(5, load);
}
