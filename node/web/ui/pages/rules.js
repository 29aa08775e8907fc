// Rules: the list (with export, import and the tester for all rules) and the editor.
import {ApiError, ROOT, del, enc, get, post, put, request} from '../api.js';
import {add, announce, badge, clear, empty, errorBox, field, fill, h, heading, table, uid} from '../dom.js';
import {tester} from './tester.js';

const VALIDATE_DELAY_MS = 400;

export async function rulesPage(main, params, context) {
  const rules = await get('/ai/rules');
  const tools = h(
    'div',
    {class: 'actions'},
    context.canWrite ? h('a', {class: 'button edit', href: '#/rules/new'}, 'New rule') : null,
    h('a', {class: 'button secondary', href: `${ROOT}/ai/rules/export`, download: 'rules.yaml'}, 'Export YAML'),
  );
  add(main, 
    heading('Rules', tools),
    rules.length === 0
      ? empty('No rules yet: studies are routed by each pipeline’s own criteria.')
      : table(
          ['Name', 'Enabled', 'Priority', 'Level', 'Pipelines', 'Destinations', 'Requires'],
          rules.map((rule) => [
            h('a', {href: `#/rules/${enc(rule.name)}`}, rule.name),
            rule.enabled ? 'yes' : badge('disabled'),
            rule.priority,
            rule.level,
            (rule.pipelines || []).join(', '),
            (rule.destinations || []).join(', '),
            rule.requires ? (rule.requires.series || []).map((series) => series.name).join(', ') : '–',
          ]),
          'Rules',
        ),
    context.canWrite ? importSection() : null,
    h('section', {class: 'card'}, tester({draft: null, title: 'Test all rules against a study'})),
  );
}

function importSection() {
  const file = h('input', {type: 'file', accept: '.yaml,.yml,text/yaml'});
  const output = h('div', {'aria-live': 'polite'});
  let text = null;
  // Orthanc passes no query to a POST: preview and apply are paths of their own
  const send = async (dryRun) => request('POST', dryRun ? '/ai/rules/import' : '/ai/rules/import/apply', {body: text, contentType: 'application/yaml'});
  const preview = async () => {
    clear(output);
    if (!file.files.length) return;
    text = await file.files[0].text();
    try {
      const answer = await send(true);
      showDiff(answer.diff);
    } catch (error) {
      add(output, errorBox(error));
    }
  };
  const showDiff = (diff) => {
    const nothing = !diff.added.length && !diff.removed.length && !diff.changed.length;
    fill(output, 
      h('h3', {}, 'What the import would change'),
      nothing ? empty('Nothing: the file matches the stored rules.') : null,
      diff.added.length ? h('p', {}, h('strong', {}, 'Added: '), diff.added.join(', ')) : null,
      diff.removed.length ? h('p', {}, h('strong', {}, 'Removed: '), diff.removed.join(', ')) : null,
      diff.changed.length
        ? table(
            ['Rule', 'Field', 'Before', 'After'],
            diff.changed.map((change) => [change.name, change.field, h('code', {}, JSON.stringify(change.before)), h('code', {}, JSON.stringify(change.after))]),
            'Changed rules',
          )
        : null,
      nothing
        ? null
        : h(
            'button',
            {
              type: 'button',
              class: 'edit',
              onclick: async () => {
                try {
                  await send(false);
                  announce('Rules imported.');
                  window.dispatchEvent(new HashChangeEvent('hashchange'));
                } catch (error) {
                  add(output, errorBox(error));
                }
              },
            },
            'Apply import',
          ),
    );
  };
  file.addEventListener('change', preview);
  return h(
    'section',
    {class: 'card'},
    h('h2', {}, 'Import rules'),
    field('YAML file (as exported)', file, 'Shows the changes first; nothing is stored until you apply them. Rules not in the file are removed.').row,
    output,
  );
}

/** Shows the condition line with a caret under the column the parser names. */
function positionMarker(text, line, column) {
  const lines = String(text).split('\n');
  const source = lines[(line || 1) - 1] ?? '';
  const caret = `${' '.repeat(Math.max(0, (column || 1) - 1))}^`;
  return h('pre', {class: 'marker', 'aria-hidden': 'true'}, `${source}\n${caret}`);
}

function checkboxGroup(legend, names, chosen, describe) {
  const boxes = names.map((name) => h('input', {type: 'checkbox', value: name, checked: chosen.includes(name), id: uid('choice')}));
  const fieldset = h(
    'fieldset',
    {class: 'choices'},
    h('legend', {}, legend),
    names.length === 0 ? empty('None available.') : null,
    boxes.map((box) => h('label', {class: 'choice', for: box.id}, box, ' ', box.value, describe ? h('span', {class: 'muted'}, describe(box.value)) : null)),
  );
  return {fieldset, values: () => boxes.filter((box) => box.checked).map((box) => box.value)};
}

function requiredSeriesRow(item, onChange, onRemove) {
  const name = h('input', {type: 'text', value: item.name || '', size: 12, class: 'req-name'});
  const condition = h('input', {type: 'text', value: item.condition || '', size: 50, class: 'req-condition mono', spellcheck: 'false'});
  name.addEventListener('input', onChange);
  condition.addEventListener('input', onChange);
  const remove = h('button', {type: 'button', class: 'secondary edit', 'aria-label': 'Remove this required series'}, 'Remove');
  const row = h('div', {class: 'req-row'}, field('Series name', name).row, field('Series condition', condition).row, remove);
  remove.addEventListener('click', () => onRemove(row));
  return {row, value: () => ({name: name.value.trim(), condition: condition.value})};
}

export async function ruleEditorPage(main, params, context, name) {
  const creating = name === null;
  const [rule, pipelines, destinations] = await Promise.all([
    creating ? Promise.resolve(null) : get(`/ai/rules/${enc(name)}`),
    get('/ai/pipelines').catch(() => []),
    get('/ai/destinations').catch(() => []),
  ]);
  const current = rule || {name: '', enabled: true, priority: 'routine', level: 'series', condition: '', pipelines: [], destinations: ['this-orthanc'], requires: null};
  const readOnly = !context.canWrite;

  const nameInput = h('input', {type: 'text', name: 'name', value: current.name, required: true, readOnly: !creating, size: 32, autocomplete: 'off'});
  const enabled = h('input', {type: 'checkbox', name: 'enabled', checked: current.enabled !== false});
  const priority = h('select', {name: 'priority', value: current.priority || 'routine'}, h('option', {value: 'routine'}, 'routine'), h('option', {value: 'urgent'}, 'urgent'));
  const level = h('select', {name: 'level', value: current.level || 'series'}, h('option', {value: 'series'}, 'each series'), h('option', {value: 'study'}, 'the study'));
  const condition = h('textarea', {name: 'condition', rows: 4, cols: 70, class: 'mono', spellcheck: 'false', value: current.condition || ''});
  const conditionStatus = h('div', {class: 'validation', id: uid('condition-status'), 'aria-live': 'polite'});
  condition.setAttribute('aria-describedby', conditionStatus.id);

  const pipelineNames = [...new Set([...pipelines.map((p) => p.name), ...(current.pipelines || [])])];
  const pipelineChoice = checkboxGroup('Pipelines', pipelineNames, current.pipelines || [], (n) => {
    const found = pipelines.find((p) => p.name === n);
    return found ? ` ${found.version}` : ' (not installed)';
  });
  const destinationNames = [...new Set([...destinations.map((d) => d.name), ...(current.destinations || [])])];
  const destinationChoice = checkboxGroup('Destinations', destinationNames, current.destinations || [], (n) => {
    const found = destinations.find((d) => d.name === n);
    return found ? ` (${found.type})` : ' (unknown)';
  });

  const requires = current.requires;
  const requireToggle = h('input', {type: 'checkbox', checked: Boolean(requires)});
  const reqRows = h('div', {class: 'req-rows'});
  const reqItems = [];
  const waitMinutes = h('input', {type: 'number', min: '1', step: 'any', value: String(requires ? requires.wait_minutes : 30), size: 6});
  const onTimeout = h('select', {value: requires ? requires.on_timeout : 'skip'}, h('option', {value: 'skip'}, 'skip the study'), h('option', {value: 'process'}, 'process what is there'));
  const addRow = (item) => {
    const entry = requiredSeriesRow(item, schedule, (row) => {
      reqItems.splice(reqItems.indexOf(entry), 1);
      row.remove();
      schedule();
    });
    reqItems.push(entry);
    add(reqRows, entry.row);
  };
  for (const item of requires ? requires.series : []) addRow(item);
  const reqBody = h(
    'div',
    {class: 'requires-body', hidden: !requires},
    reqRows,
    h('button', {type: 'button', class: 'secondary edit', onclick: () => { addRow({name: '', condition: ''}); schedule(); }}, 'Add required series'),
    field('Wait (minutes after the study is stable)', waitMinutes).row,
    field('When the wait is over and series are missing', onTimeout).row,
  );
  requireToggle.addEventListener('change', () => {
    reqBody.hidden = !requireToggle.checked;
    if (requireToggle.checked && reqItems.length === 0) addRow({name: '', condition: ''});
    schedule();
  });

  const problemsBox = h('div', {class: 'problems', 'aria-live': 'polite'});

  function draft() {
    const doc = {
      name: nameInput.value.trim(),
      enabled: enabled.checked,
      priority: priority.value,
      level: level.value,
      condition: condition.value,
      pipelines: pipelineChoice.values(),
      destinations: destinationChoice.values(),
    };
    if (requireToggle.checked) {
      doc.requires = {series: reqItems.map((item) => item.value()), wait_minutes: Number(waitMinutes.value), on_timeout: onTimeout.value};
    }
    return doc;
  }

  function showProblems(problems, valid) {
    const conditionProblems = problems.filter((problem) => problem.field === 'condition');
    const others = problems.filter((problem) => problem.field !== 'condition');
    clear(conditionStatus);
    condition.setAttribute('aria-invalid', conditionProblems.length ? 'true' : 'false');
    if (conditionProblems.length) {
      for (const problem of conditionProblems) {
        const where = problem.line ? ` (line ${problem.line}, column ${problem.column})` : '';
        add(conditionStatus, 
          h('p', {class: 'invalid', id: 'condition-message'}, `${problem.message}${where}`),
          problem.line ? positionMarker(condition.value, problem.line, problem.column) : null,
        );
      }
    } else if (condition.value.trim()) {
      add(conditionStatus, h('p', {class: 'valid', id: 'condition-message'}, 'Condition is valid.'));
    }
    clear(problemsBox);
    if (others.length) {
      add(problemsBox, h('ul', {class: 'invalid'}, others.map((problem) => h('li', {}, problem.field ? `${problem.field}: ` : '', problem.message))));
    } else if (valid) {
      add(problemsBox, h('p', {class: 'valid'}, 'The rule is valid.'));
    }
  }

  let timer = null;
  let sequence = 0;
  async function validate() {
    const mine = ++sequence;
    try {
      const answer = await post('/ai/rules/validate', draft());
      if (mine === sequence) showProblems(answer.problems || [], answer.valid);
    } catch (error) {
      if (mine === sequence) fill(problemsBox, errorBox(error));
    }
  }
  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(validate, VALIDATE_DELAY_MS);
  }

  const save = h('button', {type: 'submit', class: 'edit'}, creating ? 'Create rule' : 'Save rule');
  const remove = creating ? null : h('button', {type: 'button', class: 'edit danger'}, 'Delete rule');
  if (remove) {
    remove.addEventListener('click', async () => {
      if (!window.confirm(`Delete the rule ${current.name}? Studies it routes will no longer be processed by it.`)) return;
      try {
        await del(`/ai/rules/${enc(current.name)}`);
        announce(`Rule ${current.name} deleted.`);
        window.location.hash = '#/rules';
      } catch (error) {
        announce(error.message, 'error');
      }
    });
  }

  const form = h(
    'form',
    {
      class: 'editor',
      novalidate: true,
      onsubmit: async (event) => {
        event.preventDefault();
        const doc = draft();
        try {
          if (creating) await post('/ai/rules', doc);
          else await put(`/ai/rules/${enc(current.name)}`, doc);
          announce(`Rule ${doc.name} saved.`);
          window.location.hash = `#/rules/${enc(doc.name)}`;
          if (!creating) window.dispatchEvent(new HashChangeEvent('hashchange'));
        } catch (error) {
          if (error instanceof ApiError && error.problems.length) showProblems(error.problems, false);
          announce(error.message, 'error');
          problemsBox.prepend(errorBox(error));
        }
      },
    },
    h(
      'fieldset',
      {disabled: readOnly, class: 'plain'},
      h('legend', {class: 'sr-only'}, 'Rule'),
      field('Name', nameInput, creating ? 'Letters, digits, space, dot, dash, underscore' : 'A rule keeps its name; create a new one to rename').row,
      h('div', {class: 'field inline'}, h('label', {}, enabled, ' Enabled')),
      h('div', {class: 'row'}, field('Priority', priority).row, field('Condition looks at', level).row),
      field('Condition', condition, 'rule-engine expression over DICOM keywords, e.g. Modality == "CT" and SliceThickness <= 3').row,
      conditionStatus,
      h('div', {class: 'row'}, pipelineChoice.fieldset, destinationChoice.fieldset),
      h('fieldset', {class: 'requires'}, h('legend', {}, h('label', {}, requireToggle, ' Wait for required series')), reqBody),
    ),
    problemsBox,
    readOnly ? h('p', {class: 'muted'}, 'Read only: your role cannot change rules.') : h('div', {class: 'actions'}, save, remove),
  );
  form.addEventListener('input', schedule);
  form.addEventListener('change', schedule);

  add(main, 
    heading(creating ? 'New rule' : `Rule ${current.name}`, h('a', {href: '#/rules'}, 'All rules')),
    h(
      'div',
      {class: 'split'},
      h('section', {class: 'card'}, form),
      // testing a draft is an admin's; a viewer tests the rule as stored
      readOnly && !creating
        ? h('section', {class: 'card'}, tester({draft: null, stored: current.name, title: 'Test the stored rule against a study'}))
        : readOnly ? null : h('section', {class: 'card'}, tester({draft})),
    ),
  );
  if (!creating) validate();
  return () => clearTimeout(timer);
}
