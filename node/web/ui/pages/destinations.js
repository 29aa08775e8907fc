// Destinations: where results go. this-orthanc is built in; DICOM and DICOMweb peers are edited
// here. Secrets are never shown: an empty password or token field keeps the stored one.
import {del, enc, get, post, put} from '../api.js';
import {add, announce, badge, clear, empty, errorBox, field, fill, h, heading, table} from '../dom.js';

const KEEP_SECRET = 'leave empty to keep the stored secret';

function summary(destination) {
  if (destination.type === 'this-orthanc') return 'results stored back into the study in this Orthanc';
  if (destination.type === 'dicom') {
    const tls = destination.tls ? ', TLS' : '';
    return `${destination.ae_title} @ ${destination.host}:${destination.port} (as ${destination.calling_ae_title}${tls})`;
  }
  if (destination.type === 'dicomweb') {
    const auth = destination.auth ? destination.auth.type : 'none';
    return `${destination.url} (auth: ${auth})`;
  }
  return '';
}

function input(name, value, attrs = {}) {
  return h('input', {name, value: value === undefined || value === null ? '' : String(value), ...attrs});
}

/** The transfer syntax a destination receives results in (node/delivery/transcode.py). */
function syntaxSelect(current) {
  const select = h(
    'select',
    {name: 'transfer_syntax'},
    h('option', {value: 'explicit'}, 'uncompressed (Explicit VR Little Endian)'),
    h('option', {value: 'deflated'}, 'deflated (whole object; falls back to uncompressed)'),
    h('option', {value: 'rle'}, 'RLE lossless (label maps, captures; the rest uncompressed)'),
  );
  select.value = current.transfer_syntax || 'explicit';
  return select;
}

/** The form of one destination type; returns {node, read()} where read() gives the config JSON. */
function typeForm(type, current, creating) {
  if (type === 'dicom') {
    const tls = current.tls || {};
    const inputs = {
      ae_title: input('ae_title', current.ae_title, {required: true, maxlength: '16', size: 16}),
      host: input('host', current.host, {required: true, size: 30}),
      port: input('port', current.port, {type: 'number', min: '1', max: '65535', required: true}),
      calling_ae_title: input('calling_ae_title', current.calling_ae_title ?? 'AINODE', {maxlength: '16', size: 16}),
      timeout: input('timeout', current.timeout ?? 30, {type: 'number', min: '1', step: 'any'}),
      ca_file: input('ca_file', tls.ca_file, {size: 40}),
      cert_file: input('cert_file', tls.cert_file, {size: 40}),
      key_file: input('key_file', tls.key_file, {size: 40}),
      transfer_syntax: syntaxSelect(current),
    };
    const node = h(
      'div',
      {},
      h('div', {class: 'row'}, field('Called AE title (peer)', inputs.ae_title).row, field('Calling AE title (this node)', inputs.calling_ae_title).row),
      h('div', {class: 'row'}, field('Host', inputs.host).row, field('Port', inputs.port).row, field('Timeout (s)', inputs.timeout).row),
      field('Transfer syntax', inputs.transfer_syntax).row,
      h(
        'fieldset',
        {},
        h('legend', {}, 'TLS (optional; files on the node’s host)'),
        field('CA certificates file', inputs.ca_file).row,
        field('Client certificate file', inputs.cert_file).row,
        field('Client key file', inputs.key_file).row,
      ),
    );
    const read = () => {
      const config = {
        ae_title: inputs.ae_title.value.trim(),
        host: inputs.host.value.trim(),
        port: Number(inputs.port.value),
        calling_ae_title: inputs.calling_ae_title.value.trim() || 'AINODE',
        timeout: Number(inputs.timeout.value || 30),
        transfer_syntax: inputs.transfer_syntax.value,
      };
      const files = {ca_file: inputs.ca_file.value.trim(), cert_file: inputs.cert_file.value.trim(), key_file: inputs.key_file.value.trim()};
      if (files.ca_file || files.cert_file || files.key_file) {
        config.tls = Object.fromEntries(Object.entries(files).filter(([, value]) => value));
      }
      return config;
    };
    return {node, read};
  }
  if (type === 'dicomweb') {
    const auth = current.auth || {type: 'none'};
    const url = input('url', current.url, {type: 'url', required: true, size: 50, placeholder: 'https://pacs.example.org/dicom-web'});
    const timeout = input('timeout', current.timeout ?? 60, {type: 'number', min: '1', step: 'any'});
    const syntax = syntaxSelect(current);
    const authType = h('select', {name: 'auth', value: auth.type}, h('option', {value: 'none'}, 'none'), h('option', {value: 'basic'}, 'basic (user + password)'), h('option', {value: 'bearer'}, 'bearer token'));
    const username = input('username', auth.username, {autocomplete: 'off'});
    const password = input('password', '', {type: 'password', autocomplete: 'new-password', placeholder: !creating && auth.has_password ? KEEP_SECRET : ''});
    const token = input('token', '', {type: 'password', autocomplete: 'off', placeholder: !creating && auth.has_token ? KEEP_SECRET : ''});
    const basic = h('div', {class: 'row'}, field('User name', username).row, field('Password', password, !creating && auth.has_password ? KEEP_SECRET : null).row);
    const bearer = h('div', {}, field('Token', token, !creating && auth.has_token ? KEEP_SECRET : null).row);
    const show = () => {
      basic.hidden = authType.value !== 'basic';
      bearer.hidden = authType.value !== 'bearer';
    };
    authType.addEventListener('change', show);
    show();
    const node = h('div', {}, field('DICOMweb root URL', url).row, field('Timeout (s)', timeout).row, field('Transfer syntax', syntax).row, field('Authentication', authType).row, basic, bearer);
    const read = () => {
      const config = {url: url.value.trim(), timeout: Number(timeout.value || 60), transfer_syntax: syntax.value};
      if (authType.value === 'basic') {
        config.auth = {type: 'basic', username: username.value.trim()};
        if (password.value) config.auth.password = password.value;
      } else if (authType.value === 'bearer') {
        config.auth = {type: 'bearer'};
        if (token.value) config.auth.token = token.value;
      } else config.auth = {type: 'none'};
      return config;
    };
    return {node, read};
  }
  return {node: empty('This destination is built in and cannot be changed.'), read: () => ({})};
}

function editor(current, onDone) {
  const creating = current === null;
  const start = current || {type: 'dicom'};
  const name = input('name', start.name, {required: true, readOnly: !creating, size: 30, autocomplete: 'off'});
  const type = h('select', {name: 'type', value: start.type, disabled: !creating}, h('option', {value: 'dicom'}, 'DICOM (C-STORE)'), h('option', {value: 'dicomweb'}, 'DICOMweb (STOW-RS)'));
  const holder = h('div', {});
  const output = h('div', {'aria-live': 'polite'});
  let form = null;
  const build = () => {
    form = typeForm(type.value, start.type === type.value ? start : {}, creating);
    fill(holder, form.node);
  };
  type.addEventListener('change', build);
  build();
  return h(
    'form',
    {
      class: 'card editor',
      'aria-label': creating ? 'New destination' : `Edit destination ${start.name}`,
      onsubmit: async (event) => {
        event.preventDefault();
        const config = {type: type.value, name: name.value.trim(), ...form.read()};
        try {
          if (creating) await post('/ai/destinations', config);
          else await put(`/ai/destinations/${enc(start.name)}`, config);
          announce(`Destination ${config.name} saved.`);
          onDone();
        } catch (error) {
          const problems = error.problems.map((problem) => h('li', {}, problem.field ? `${problem.field}: ` : '', problem.message));
          fill(output, errorBox(error), problems.length ? h('ul', {class: 'invalid'}, problems) : null);
        }
      },
    },
    h('h2', {}, creating ? 'New destination' : `Edit ${start.name}`),
    h('div', {class: 'row'}, field('Name', name).row, field('Type', type).row),
    holder,
    output,
    h('div', {class: 'actions'}, h('button', {type: 'submit', class: 'edit'}, 'Save destination'), h('button', {type: 'button', class: 'secondary', onclick: () => onDone()}, 'Cancel')),
  );
}

export async function destinationsPage(main, params, context) {
  const list = h('div', {});
  const editArea = h('div', {});
  const newButton = context.canWrite ? h('button', {type: 'button', class: 'edit'}, 'New destination') : null;
  add(main, heading('Destinations', newButton), editArea, list);

  const load = async () => {
    clear(editArea);
    let destinations;
    try {
      destinations = await get('/ai/destinations');
    } catch (error) {
      fill(list, errorBox(error));
      return;
    }
    fill(list, 
      table(
        ['Name', 'Type', 'Summary', 'Test', ''],
        destinations.map((destination) => {
          const result = h('span', {class: 'test-outcome', 'aria-live': 'polite'});
          const test = h(
            'button',
            {
              type: 'button',
              class: 'secondary',
              'aria-label': `Test ${destination.name}`,
              onclick: async () => {
                test.disabled = true;
                result.textContent = 'Testing…';
                try {
                  const answer = await post(`/ai/destinations/${enc(destination.name)}/test`);
                  fill(result, badge(answer.ok ? 'ok' : 'failed'), ' ', answer.message || '');
                } catch (error) {
                  fill(result, badge('failed'), ' ', error.message);
                } finally {
                  test.disabled = false;
                }
              },
            },
            'Test',
          );
          const changeable = context.canWrite && !destination.builtin;
          return [
            h('strong', {}, destination.name),
            destination.type,
            summary(destination),
            h('div', {class: 'test-cell'}, test, result),
            changeable
              ? h(
                  'div',
                  {class: 'actions'},
                  h('button', {type: 'button', class: 'edit secondary', 'aria-label': `Edit ${destination.name}`, onclick: () => showEditor(destination)}, 'Edit'),
                  h(
                    'button',
                    {
                      type: 'button',
                      class: 'edit danger',
                      'aria-label': `Delete ${destination.name}`,
                      onclick: async () => {
                        if (!window.confirm(`Delete the destination ${destination.name}?`)) return;
                        try {
                          await del(`/ai/destinations/${enc(destination.name)}`);
                          announce(`Destination ${destination.name} deleted.`);
                          load();
                        } catch (error) {
                          announce(error.message, 'error');
                        }
                      },
                    },
                    'Delete',
                  ),
                )
              : destination.builtin
                ? h('span', {class: 'muted'}, 'built in')
                : '',
          ];
        }),
        'Destinations',
      ),
    );
  };
  const showEditor = (destination) => {
    const form = editor(destination, load);
    fill(editArea, form);
    form.querySelector('input, select')?.focus();
  };
  if (newButton) newButton.addEventListener('click', () => showEditor(null));
  await load();
}
