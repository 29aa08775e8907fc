// Jobs: a filtered, paged list, and one job's detail with its timings, results and deliveries.
import {ApiError, enc, explorer, get, post} from '../api.js';
import {add, announce, badge, clear, empty, errorBox, field, fill, h, heading, table, when} from '../dom.js';
import {every} from './refresh.js';

const STATUSES = ['queued', 'running', 'done', 'failed', 'cancelled'];
const PAGE = 50;
/** Where `make viewer` serves OHIF by default (docs/viewer.md); changeable on the job page. */
const DEFAULT_VIEWER = 'http://localhost:3000';

function shortUid(uid) {
  if (!uid) return '–';
  return h('span', {class: 'uid', title: uid}, uid.length > 28 ? `…${uid.slice(-26)}` : uid);
}

export async function jobsPage(main, params) {
  const status = params.get('status') || '';
  const study = params.get('study') || '';
  const offset = Math.max(0, Number.parseInt(params.get('offset') || '0', 10) || 0);

  const statusSelect = h(
    'select',
    {name: 'status', value: status},
    h('option', {value: ''}, 'any'),
    STATUSES.map((name) => h('option', {value: name}, name)),
  );
  const studyInput = h('input', {type: 'search', name: 'study', value: study, placeholder: 'StudyInstanceUID', size: 40});
  const form = h(
    'form',
    {
      class: 'filters',
      role: 'search',
      onsubmit: (event) => {
        event.preventDefault();
        go({status: statusSelect.value, study: studyInput.value.trim(), offset: 0});
      },
    },
    field('Status', statusSelect).row,
    field('Study', studyInput).row,
    h('button', {type: 'submit'}, 'Filter'),
  );
  const list = h('div', {'aria-live': 'polite', 'aria-busy': 'true'});
  const pager = h('nav', {class: 'pager', 'aria-label': 'Pages of jobs'});
  add(main, heading('Jobs'), form, list, pager);

  function go(next) {
    const query = new URLSearchParams();
    const merged = {status, study, offset, ...next};
    for (const [key, value] of Object.entries(merged)) if (value) query.set(key, value);
    window.location.hash = `#/jobs${query.toString() ? `?${query}` : ''}`;
  }

  const load = async () => {
    let jobs;
    try {
      jobs = await get('/ai/jobs', {status, study, limit: PAGE + 1, offset});
    } catch (error) {
      fill(list, errorBox(error));
      return;
    }
    const more = jobs.length > PAGE;
    jobs = jobs.slice(0, PAGE);
    list.setAttribute('aria-busy', 'false');
    fill(list, 
      jobs.length === 0
        ? empty('No jobs match.')
        : table(
            ['Job', 'Status', 'Pipeline', 'Study', 'Created', 'Finished', 'Attempts', 'Error'],
            jobs.map((job) => [
              h('a', {href: `#/jobs/${job.id}`}, `Job ${job.id}`),
              badge(job.status),
              `${job.pipeline_name} ${job.pipeline_version}`,
              shortUid(job.study_instance_uid),
              when(job.created_at),
              when(job.finished_at),
              `${job.attempts}/${job.max_attempts}`,
              h('span', {class: 'error-text clip', title: job.error || ''}, job.error || ''),
            ]),
            'Jobs',
          ),
    );
    fill(pager, 
      h('button', {type: 'button', disabled: offset === 0, onclick: () => go({offset: Math.max(0, offset - PAGE)})}, 'Previous'),
      h('span', {class: 'muted'}, jobs.length ? `${offset + 1}–${offset + jobs.length}` : ''),
      h('button', {type: 'button', disabled: !more, onclick: () => go({offset: offset + PAGE})}, 'Next'),
    );
  };
  return every(5, load);
}

function timingsTable(timings) {
  const entries = Object.entries(timings || {});
  if (entries.length === 0) return empty('No stage timings.');
  const total = entries.reduce((sum, [, seconds]) => sum + Number(seconds || 0), 0) || 1;
  return h(
    'table',
    {class: 'grid timings'},
    h('caption', {class: 'sr-only'}, 'Stage timings'),
    h('thead', {}, h('tr', {}, h('th', {scope: 'col'}, 'Stage'), h('th', {scope: 'col'}, 'Seconds'), h('th', {scope: 'col'}, 'Share'))),
    h(
      'tbody',
      {},
      entries.map(([stage, seconds]) => {
        const bar = h('span', {class: 'bar'});
        bar.style.width = `${Math.max(1, (100 * Number(seconds)) / total).toFixed(1)}%`;
        return h(
          'tr',
          {'data-stage': stage},
          h('th', {scope: 'row'}, stage),
          h('td', {class: 'num'}, Number(seconds).toFixed(2)),
          h('td', {class: 'bar-cell', 'aria-hidden': 'true'}, bar),
        );
      }),
      h('tr', {class: 'total'}, h('th', {scope: 'row'}, 'total'), h('td', {class: 'num'}, total.toFixed(2)), h('td', {})),
    ),
  );
}

function resultsSection(job) {
  const result = job.result;
  if (!result) return empty(job.status === 'done' ? 'No results recorded.' : 'No results yet.');
  const segments = result.segments || [];
  const objects = Object.entries(result).filter(([, value]) => value && typeof value === 'object' && !Array.isArray(value) && 'orthanc_id' in value);
  return h(
    'div',
    {},
    segments.length
      ? table(
          ['#', 'Segment', 'Volume (mL)', 'Mean', 'Voxels'],
          segments.map((segment) => [
            String(segment.number ?? ''),
            segment.label ?? '',
            segment.volume_ml === undefined ? '–' : String(segment.volume_ml),
            segment.mean === null || segment.mean === undefined ? '–' : String(segment.mean),
            String(segment.voxels ?? ''),
          ]),
          'Segments',
        )
      : empty('No segments.'),
    objects.length
      ? h(
          'ul',
          {class: 'links'},
          objects.map(([kind, value]) =>
            h(
              'li',
              {},
              h('a', {href: explorer('instance', value.orthanc_id), target: '_blank', rel: 'noopener'}, `${kind.toUpperCase()} in Orthanc`),
              ' ',
              shortUid(value.sop_instance_uid),
              value.instances > 1 ? h('span', {class: 'muted'}, ` (${value.instances} instances)`) : null,
            ),
          ),
        )
      : null,
  );
}

function deliveriesSection(job, context, reload) {
  const deliveries = job.deliveries || [];
  if (deliveries.length === 0) return empty('No deliveries to other destinations.');
  return table(
    ['Destination', 'Status', 'Attempts', 'Next attempt', 'Delivered', 'Last error', ''],
    deliveries.map((delivery) => [
      delivery.destination,
      badge(delivery.status),
      `${delivery.attempts}/${delivery.max_attempts}`,
      when(delivery.next_attempt_at),
      when(delivery.delivered_at),
      h('span', {class: 'error-text'}, delivery.last_error || ''),
      delivery.status === 'failed' && context.canWrite
        ? h(
            'button',
            {
              type: 'button',
              class: 'edit',
              'aria-label': `Retry delivery to ${delivery.destination}`,
              onclick: async (event) => {
                event.target.disabled = true;
                try {
                  await post(`/ai/deliveries/${delivery.id}/retry`);
                  announce(`Delivery to ${delivery.destination} queued again.`);
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
    'Deliveries',
  );
}

function viewerLink(job) {
  const stored = window.localStorage.getItem('ai-node.viewer') || DEFAULT_VIEWER;
  const link = h('a', {target: '_blank', rel: 'noopener'}, 'Open in OHIF');
  const input = h('input', {type: 'url', value: stored, size: 28});
  const update = () => {
    const base = input.value.trim().replace(/\/$/, '') || DEFAULT_VIEWER;
    link.href = `${base}/viewer?StudyInstanceUIDs=${enc(job.study_instance_uid)}`;
  };
  input.addEventListener('change', () => {
    window.localStorage.setItem('ai-node.viewer', input.value.trim());
    update();
  });
  update();
  return h('div', {class: 'viewer-link'}, link, field(' at (make viewer)', input).row);
}

export async function jobDetailPage(main, params, context, id) {
  const body = h('div', {'aria-live': 'polite'});
  const actions = h('div', {class: 'actions'});
  add(main, heading(`Job ${id}`, actions), body);
  let stop = null;
  // refresh again (after a retry) until the job and its deliveries settle
  const restart = () => {
    if (stop) stop();
    stop = every(3, load);
  };

  const act = async (path, done) => {
    try {
      await post(path);
      announce(done);
    } catch (error) {
      announce(error.message, 'error');
    }
    restart();
  };

  const load = async () => {
    let job;
    try {
      job = await get(`/ai/jobs/${enc(id)}`);
    } catch (error) {
      fill(body, errorBox(error instanceof ApiError && error.status === 404 ? new Error(`No job ${id}.`) : error));
      return;
    }
    clear(actions);
    if (context.canWrite && job.status === 'failed') {
      add(actions, h('button', {type: 'button', class: 'edit', onclick: () => act(`/ai/jobs/${job.id}/retry`, `Job ${job.id} queued again.`)}, 'Retry job'));
    }
    if (context.canWrite && job.status === 'queued') {
      add(actions, h('button', {type: 'button', class: 'edit danger', onclick: () => act(`/ai/jobs/${job.id}/cancel`, `Job ${job.id} cancelled.`)}, 'Cancel job'));
    }
    const facts = [
      ['Status', h('span', {id: 'job-status'}, badge(job.status))],
      ['Pipeline', `${job.pipeline_name} ${job.pipeline_version}`],
      ['Study', h('span', {class: 'uid'}, job.study_instance_uid)],
      ['Series', job.series_instance_uid ? h('span', {class: 'uid'}, job.series_instance_uid) : null],
      ['In Orthanc', h('a', {href: explorer('study', job.orthanc_study_id), target: '_blank', rel: 'noopener'}, 'Study in Orthanc Explorer')],
      ['Viewer', viewerLink(job)],
      ['Trigger', job.trigger],
      ['Priority', String(job.priority)],
      ['Rules', (job.rules || []).join(', ') || null],
      ['Destinations', (job.destinations || []).join(', ') || null],
      ['Attempts', `${job.attempts}/${job.max_attempts}`],
      ['Created', when(job.created_at)],
      ['Started', when(job.started_at)],
      ['Finished', when(job.finished_at)],
    ].filter(([, value]) => value !== null && value !== undefined);
    fill(body, 
      h('dl', {class: 'facts'}, facts.map(([name, value]) => [h('dt', {}, name), h('dd', {}, value)])),
      job.error ? h('section', {}, h('h2', {}, 'Error'), h('pre', {class: 'error', id: 'job-error'}, job.error)) : null,
      h('section', {}, h('h2', {}, 'Stage timings'), timingsTable(job.stage_timings)),
      h('section', {}, h('h2', {}, 'Results'), resultsSection(job)),
      h('section', {}, h('h2', {}, 'Deliveries'), deliveriesSection(job, context, restart)),
    );
    const settled = ['done', 'failed', 'cancelled'].includes(job.status);
    const pending = (job.deliveries || []).some((delivery) => ['pending', 'sending'].includes(delivery.status));
    if (settled && !pending && stop) {
      stop();
      stop = null;
    }
  };
  restart();
  return () => stop && stop();
}
