// Pipelines: what is installed, enabled, and warm in a worker.
import {get} from '../api.js';
import {add, badge, empty, h, heading, table} from '../dom.js';

function swatch(segment) {
  const rgb = segment.rgb || segment.colour || segment.color;
  if (!Array.isArray(rgb) || rgb.length !== 3) return null;
  const box = h('span', {class: 'swatch', 'aria-hidden': 'true'});
  box.style.backgroundColor = `rgb(${rgb.map((v) => Number(v) || 0).join(',')})`;
  return box;
}

function warmth(pipeline) {
  if (pipeline.warm === true) return badge('warm');
  if (pipeline.warm === false) return badge('cold');
  if (typeof pipeline.warm === 'number') return `${pipeline.warm} warm`;
  return '–';
}

function accepts(spec) {
  if (!spec) return '–';
  const parts = [(spec.modalities || []).join('/') || 'any modality'];
  if (spec.min_slices) parts.push(`≥ ${spec.min_slices} slices`);
  if (spec.orientation && spec.orientation !== 'any') parts.push(spec.orientation);
  if ((spec.body_parts || []).length) parts.push(spec.body_parts.join('/'));
  return parts.join(', ');
}

export async function pipelinesPage(main) {
  const pipelines = await get('/ai/pipelines');
  add(main, 
    heading('Pipelines'),
    pipelines.length === 0
      ? empty('No pipelines installed.')
      : table(
          ['Name', 'Version', 'Enabled', 'Workers', 'Description', 'Accepts', 'Segments'],
          pipelines.map((pipeline) => [
            h('strong', {}, pipeline.name),
            pipeline.version,
            pipeline.enabled === false ? badge('disabled') : 'yes',
            warmth(pipeline),
            pipeline.description || '',
            accepts(pipeline.accepts),
            h('ul', {class: 'plain'}, (pipeline.segments || []).map((segment) => h('li', {}, swatch(segment), ' ', segment.label || segment.name || ''))),
          ]),
          'Pipelines',
        ),
  );
}
