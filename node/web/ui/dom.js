// Building the page from elements and text nodes: no value is ever parsed as markup.

/** An element: h('a', {href: '#/jobs', class: 'x', onclick: fn}, 'text', child, ...). */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  let deferredValue;
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'value') deferredValue = value;
    else if (key === 'class') node.className = value;
    else if (key.startsWith('on') && typeof value === 'function') {
      node.addEventListener(key.slice(2), value);
    } else if (typeof value !== 'string' && key in node) node[key] = value;
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  add(node, ...children);
  // after the children, so that a <select> has its options when its value is set
  if (deferredValue !== undefined) node.value = String(deferredValue);
  return node;
}

/** Append children (nodes, strings, numbers, nested arrays; null and false are skipped). */
export function add(node, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function clear(node) {
  while (node.firstChild) node.firstChild.remove();
  return node;
}

/** Replace a node's children. */
export function fill(node, ...children) {
  return add(clear(node), ...children);
}

/** Say something to screen readers and show it in the status bar for a while. */
let statusTimer = null;
export function announce(message, kind = 'info') {
  const status = document.getElementById('status');
  if (!status) return;
  status.textContent = message;
  status.dataset.kind = kind;
  status.classList.add('shown');
  clearTimeout(statusTimer);
  statusTimer = setTimeout(() => status.classList.remove('shown'), kind === 'error' ? 10000 : 4000);
}

let uniqueCounter = 0;
export function uid(prefix = 'f') {
  uniqueCounter += 1;
  return `${prefix}-${uniqueCounter}`;
}

/** A labelled form field: returns {row, input}. */
export function field(label, input, help) {
  if (!input.id) input.id = uid('field');
  const helpNode = help ? h('div', {class: 'help', id: `${input.id}-help`}, help) : null;
  if (helpNode) input.setAttribute('aria-describedby', helpNode.id);
  const row = h('div', {class: 'field'}, h('label', {for: input.id}, label), input, helpNode);
  return {row, input};
}

/** A table with a header row; rows are arrays of cells (nodes or text). */
export function table(headers, rows, caption) {
  return h(
    'table',
    {class: 'grid'},
    caption ? h('caption', {class: 'sr-only'}, caption) : null,
    h('thead', {}, h('tr', {}, headers.map((name) => h('th', {scope: 'col'}, name)))),
    h('tbody', {}, rows.map((cells) => h('tr', {}, cells.map((cell) => h('td', {}, cell))))),
  );
}

export function badge(status) {
  return h('span', {class: `badge badge-${String(status).replace(/[^a-z-]/g, '')}`}, status);
}

export function when(iso) {
  if (!iso) return '–';
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return h('time', {datetime: iso, title: iso}, date.toLocaleString());
}

export function errorBox(error) {
  return h('div', {class: 'error', role: 'alert'}, error && error.message ? error.message : String(error));
}

export function empty(text) {
  return h('p', {class: 'muted empty'}, text);
}

export function heading(text, ...extra) {
  return h('div', {class: 'page-head'}, h('h1', {tabindex: '-1'}, text), ...extra);
}
