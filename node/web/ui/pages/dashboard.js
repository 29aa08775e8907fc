// Dashboard: queue depth, jobs and deliveries per status, recent failures, studies set aside.
import {get, post} from '../api.js';
import {add, announce, badge, empty, errorBox, fill, h, heading, table, when} from '../dom.js';
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

// Studies routing could not handle (deleted, a UID too long, Orthanc or the database busy):
// set aside so later studies go on, each with its reason and, for an admin, a Retry.
function setAside(problems, context, reload) {
  return h(
    'section',
    {class: 'card wide', 'aria-label': 'Studies set aside'},
    h('h2', {}, 'Studies set aside by routing'),
    problems.length === 0
      ? empty('None: every study that arrived was routed.')
      : table(
          ['Last failure', 'Study', 'Status', 'Attempts', 'Next attempt', 'Reason', ''],
          problems.map((problem) => [
            when(problem.last_failed_at),
            h('span', {class: 'uid'}, problem.study_instance_uid || `Orthanc ${problem.orthanc_study_id}`),
            badge(problem.status),
            String(problem.attempts),
            when(problem.next_attempt_at),
            h('span', {class: 'error-text'}, problem.reason),
            context.canWrite
              ? h(
                  'button',
                  {
                    type: 'button',
                    class: 'edit',
                    'aria-label': `Retry routing study ${problem.study_instance_uid || problem.orthanc_study_id}`,
                    onclick: async (event) => {
                      event.target.disabled = true;
                      try {
                        await post(`/ai/intake/problems/${problem.id}/retry`);
                        announce('The study will be routed again within a second.');
                      } catch (error) {
                        announce(error.message, 'error');
                      }
                      reload();
                    },
                  },
                  'Retry',
                )
              : '',
          ]),
          'Studies set aside by routing',
        ),
  );
}

export async function dashboardPage(main, params, context) {
  const body = h('div', {class: 'dashboard'});
  const updated = h('p', {class: 'muted small', 'aria-live': 'off'});
  add(main, heading('Dashboard', updated), body);

  const load = async () => {
    let data;
    let problems;
    try {
      [data, problems] = await Promise.all([get('/ai/dashboard'), get('/ai/intake/problems')]);
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
      setAside(problems, context, load),
    );
  };
  return every(5, load);
}
