// Audit log: who changed what, when, with a compact before/after diff.
import {get} from '../api.js';
import {add, empty, errorBox, fill, h, heading, table, when} from '../dom.js';

const PAGE = 50;

function compact(value) {
  if (value === undefined) return '∅';
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/** The keys whose values differ, as "key: before → after" lines. */
function diff(before, after) {
  if (!before && !after) return '';
  if (!before) return h('span', {class: 'added'}, 'created');
  if (!after) return h('span', {class: 'removed'}, 'deleted');
  const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort();
  const changed = keys.filter((key) => JSON.stringify(before[key]) !== JSON.stringify(after[key]));
  if (changed.length === 0) return h('span', {class: 'muted'}, 'no change');
  return h(
    'ul',
    {class: 'plain diff'},
    changed.map((key) => h('li', {}, h('strong', {}, key), ': ', h('del', {}, compact(before[key])), ' → ', h('ins', {}, compact(after[key])))),
  );
}

export async function auditPage(main, params) {
  const offset = Math.max(0, Number.parseInt(params.get('offset') || '0', 10) || 0);
  const list = h('div', {});
  const pager = h('nav', {class: 'pager', 'aria-label': 'Pages of the audit log'});
  add(main, heading('Audit log'), list, pager);
  let entries;
  try {
    entries = await get('/ai/audit', {limit: PAGE + 1, offset});
  } catch (error) {
    add(list, errorBox(error));
    return;
  }
  const more = entries.length > PAGE;
  entries = entries.slice(0, PAGE);
  add(list, 
    entries.length === 0
      ? empty('Nothing recorded yet.')
      : table(
          ['When', 'Who', 'Action', 'Subject', 'Change'],
          entries.map((entry) => [
            when(entry.at),
            entry.actor,
            entry.action,
            `${entry.subject_type} ${entry.subject_name || ''}`,
            diff(entry.before, entry.after),
          ]),
          'Audit entries',
        ),
  );
  const go = (next) => {
    window.location.hash = next ? `#/audit?offset=${next}` : '#/audit';
  };
  fill(pager, 
    h('button', {type: 'button', disabled: offset === 0, onclick: () => go(Math.max(0, offset - PAGE))}, 'Previous'),
    h('span', {class: 'muted'}, entries.length ? `${offset + 1}–${offset + entries.length}` : ''),
    h('button', {type: 'button', disabled: !more, onclick: () => go(offset + PAGE)}, 'Next'),
  );
}
