// The rule tester: a stored study (or an uploaded DICOM file) against a draft rule or all rules.
import {get, post} from '../api.js';
import {announce, badge, empty, errorBox, field, fill, h, table} from '../dom.js';

function studyLabel(study) {
  const tags = study.MainDicomTags || {};
  const date = tags.StudyDate && tags.StudyDate.length === 8
    ? `${tags.StudyDate.slice(0, 4)}-${tags.StudyDate.slice(4, 6)}-${tags.StudyDate.slice(6, 8)}`
    : tags.StudyDate || 'no date';
  return `${date} · ${tags.StudyDescription || '(no description)'} · ${tags.StudyInstanceUID || study.ID}`;
}

async function storedStudies() {
  const studies = await get('/studies', {expand: 'true', since: 0, limit: 500});
  return studies.sort((a, b) => String(b.LastUpdate || '').localeCompare(String(a.LastUpdate || '')));
}

function json(value) {
  return JSON.stringify(value);
}

function verdictView(verdict) {
  return h(
    'div',
    {class: 'verdict'},
    h('h4', {}, verdict.subject, ' ', badge(verdict.matched ? 'matched' : 'not matched')),
    h(
      'ul',
      {class: 'clauses'},
      (verdict.clauses || []).map((clause) =>
        h(
          'li',
          {class: clause.passed ? 'pass' : 'fail'},
          h('span', {class: 'mark', 'aria-hidden': 'true'}, clause.passed ? '✓' : '✗'),
          h('span', {class: 'sr-only'}, clause.passed ? 'passed: ' : 'failed: '),
          h('code', {}, clause.text),
          clause.values && Object.keys(clause.values).length ? h('span', {class: 'muted'}, ` with ${json(clause.values)}`) : null,
          !clause.passed && clause.explanation ? h('div', {class: 'explanation'}, clause.explanation) : null,
        ),
      ),
    ),
  );
}

function resultView(result, seriesByKey) {
  const seriesNames = (result.series || []).map((key) => {
    const series = seriesByKey.get(key);
    return series ? `${key} (${series.modality || '?'} ${series.description || ''}, ${series.instances} instances)` : key;
  });
  const completeness = result.completeness;
  return h(
    'article',
    {class: `card test-result ${result.matched ? 'matched' : 'unmatched'}`, 'data-rule': result.rule},
    h('h3', {}, result.rule, ' ', badge(result.matched ? 'matched' : 'not matched'), result.enabled === false ? h('span', {class: 'muted'}, ' (disabled)') : null),
    h(
      'dl',
      {class: 'facts'},
      h('dt', {}, 'Series selected'),
      h('dd', {class: 'selected-series'}, seriesNames.length ? seriesNames.join('; ') : 'none'),
      h('dt', {}, 'Pipelines'),
      h(
        'dd',
        {},
        (result.pipelines || []).length
          ? h(
              'ul',
              {class: 'plain'},
              result.pipelines.map((pipeline) =>
                h('li', {}, h('strong', {}, pipeline.name), ': ', pipeline.series_instance_uid ? h('span', {class: 'uid'}, pipeline.series_instance_uid) : 'no series', pipeline.reason ? h('span', {class: 'muted'}, ` — ${pipeline.reason}`) : null),
              ),
            )
          : 'none',
      ),
      h('dt', {}, 'Completeness'),
      h('dd', {}, completeness ? (completeness.complete ? 'complete' : `missing ${completeness.missing.join(', ')}`) : 'no required series'),
    ),
    h('details', {open: !result.matched}, h('summary', {}, 'Clauses'), (result.verdicts || []).map(verdictView)),
  );
}

/** The largest file the tester takes (node/web/tester.py MAX_UPLOAD). */
const MAX_UPLOAD = 16 * 1024 * 1024;

function megabytes(size) {
  return `${(size / 1024 / 1024).toFixed(1)} MB`;
}

/** A multipart/related body: an optional JSON part, then the DICOM file; and its Content-Type. */
function related(file, options) {
  // getRandomValues, not randomUUID: the latter needs HTTPS or localhost
  const random = Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, '0')).join('');
  const boundary = `ai-node-${random}`;
  const parts = [];
  if (options) parts.push(`--${boundary}\r\nContent-Type: application/json\r\n\r\n${JSON.stringify(options)}\r\n`);
  parts.push(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`, file, `\r\n--${boundary}--\r\n`);
  return [new Blob(parts), `multipart/related; type="application/dicom"; boundary=${boundary}`];
}

/**
 * The tester; draft() gives the rule to test (admin only: POST /ai/rules/test/draft), else
 * `stored` names the stored rule to test, else every stored rule is tested.
 */
export function tester({draft, stored = null, title = 'Test against a study'}) {
  const select = h('select', {name: 'study'}, h('option', {value: ''}, 'Loading stored studies…'));
  const file = h('input', {type: 'file', name: 'dicom', accept: '.dcm,application/dicom'});
  const output = h('div', {class: 'test-output', 'aria-live': 'polite'});
  const run = h('button', {type: 'submit'}, 'Run test');
  const form = h(
    'form',
    {
      class: 'tester',
      onsubmit: async (event) => {
        event.preventDefault();
        const rule = draft ? draft() : null;
        if (draft && !rule) return;
        run.disabled = true;
        fill(output, h('p', {class: 'muted'}, 'Testing…'));
        try {
          let answer;
          const chosen = file.files && file.files.length ? file.files[0] : null;
          if (chosen && chosen.size > MAX_UPLOAD) {
            fill(output, errorBox(`The file is ${megabytes(chosen.size)}; the tester takes at most ${megabytes(MAX_UPLOAD)}. Store the study in Orthanc and test it there.`));
            return;
          }
          if (chosen) {
            // The rule travels with the file as a JSON part of a multipart/related body (the
            // shape of a STOW-RS request): Orthanc takes a multipart/form-data body apart before
            // the node sees it, and passes no query arguments to a POST.
            const [body, contentType] = related(chosen, rule ? {rule} : stored ? {rule: stored} : null);
            answer = await post(rule ? '/ai/rules/test/draft' : '/ai/rules/test', body, {contentType});
          } else if (select.value && rule) {
            answer = await post('/ai/rules/test/draft', {study: select.value, rule});
          } else if (select.value) {
            answer = await post('/ai/rules/test', stored ? {study: select.value, rule: stored} : {study: select.value});
          } else {
            fill(output, errorBox('Pick a stored study or a DICOM file first.'));
            return;
          }
          show(answer);
          announce('Test finished.');
        } catch (error) {
          fill(output, errorBox(error));
        } finally {
          run.disabled = false;
        }
      },
    },
    h('h2', {}, title),
    field('Stored study', select, 'Study date · description · Study Instance UID').row,
    field('or a DICOM file', file, 'One instance; its series is tested as the whole study').row,
    draft ? h('p', {class: 'muted small'}, 'Tests the rule as it is in the editor, saved or not.') : null,
    run,
    output,
  );

  function show(answer) {
    const study = answer.study || {};
    const series = study.series || [];
    const seriesByKey = new Map(series.map((item) => [item.key, item]));
    fill(output, 
      h('h3', {}, 'Study ', h('span', {class: 'uid'}, study.study_instance_uid || '')),
      series.length
        ? table(
            ['Key', 'Modality', 'Description', 'Instances', 'Series Instance UID'],
            series.map((item) => [item.key, item.modality || '', item.description || '', String(item.instances), h('span', {class: 'uid'}, item.series_instance_uid)]),
            'Series of the study',
          )
        : empty('The study has no series the rules look at.'),
      (answer.results || []).length ? answer.results.map((result) => resultView(result, seriesByKey)) : empty('No rules to test.'),
    );
  }

  storedStudies().then(
    (studies) => {
      fill(select, 
        h('option', {value: ''}, studies.length ? 'Choose a study…' : 'No studies stored'),
        studies.map((study) => h('option', {value: study.ID}, studyLabel(study))),
      );
    },
    (error) => {
      fill(select, h('option', {value: ''}, `Could not list studies: ${error.message}`));
    },
  );
  return form;
}
