// The node's REST API (/ai/...) and Orthanc's, on the console's own origin. The browser sends
// the basic-auth credentials it logged in with, and Origin and Sec-Fetch-Site, which tell the
// node's CSRF check that the page is its own (node/web/access.py).

/** Where Orthanc's REST API starts: the console lives at <root>/ai/ui/. */
export const ROOT = window.location.pathname.replace(/\/ai\/ui(\/.*)?$/, '');

export class ApiError extends Error {
  constructor(status, body) {
    const message = body && typeof body === 'object' && body.error ? body.error : `HTTP ${status}`;
    super(status === 403 ? `Refused (403): ${message}` : message);
    this.status = status;
    this.body = body;
    this.problems = body && Array.isArray(body.problems) ? body.problems : [];
  }
}

export async function request(method, path, {query, body, contentType, accept} = {}) {
  const url = new URL(ROOT + path, window.location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(key, value);
  }
  const headers = {Accept: accept || 'application/json'};
  const init = {method, headers, credentials: 'same-origin'};
  if (body !== undefined) {
    if (body instanceof Blob || body instanceof ArrayBuffer || typeof body === 'string') {
      init.body = body;
      headers['Content-Type'] = contentType || 'application/octet-stream';
    } else {
      init.body = JSON.stringify(body);
      headers['Content-Type'] = 'application/json';
    }
  }
  const response = await fetch(url, init);
  const type = response.headers.get('Content-Type') || '';
  let data;
  if (type.includes('json')) data = await response.json().catch(() => null);
  else data = await response.text();
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export const get = (path, query) => request('GET', path, {query});
export const post = (path, body, options = {}) => request('POST', path, {body, ...options});
export const put = (path, body) => request('PUT', path, {body});
export const del = (path) => request('DELETE', path);

/** Orthanc Explorer's page of a study, series or instance. */
export function explorer(level, orthancId) {
  return `${ROOT}/app/explorer.html#${level}?uuid=${encodeURIComponent(orthancId)}`;
}

export const enc = encodeURIComponent;
