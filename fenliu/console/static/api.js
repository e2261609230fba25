// The JSON API (docs/api.md): same-origin fetch with the session cookie, the CSRF header on
// every state-changing request, errors as ApiError carrying the server's `error` text.

let csrfToken = '';
let onUnauthorized = () => {};

/** Remember the CSRF token from POST /api/login or GET /api/me. */
export function setCsrf(token) {
  csrfToken = token || '';
}

/** Called on any 401 (the session ended), except where the caller asked to handle it. */
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

export class ApiError extends Error {
  constructor(status, message, code = '', body = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

/**
 * Call the API. `body` (an object) is sent as JSON. Resolves to the parsed JSON answer;
 * rejects with ApiError (status 0 for a network failure). Options: `handle401` — do not
 * call the global session-expired handler (login form, initial /api/me).
 */
export async function api(method, path, body = undefined, {handle401 = false} = {}) {
  const headers = {Accept: 'application/json'};
  const init = {method, headers, credentials: 'same-origin', cache: 'no-store'};
  if (method !== 'GET' && method !== 'HEAD') {
    headers['Content-Type'] = 'application/json';
    if (csrfToken) headers['X-CSRF-Token'] = csrfToken;
    init.body = JSON.stringify(body ?? {});
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, '无法连接服务器，请检查网络', 'network');
  }
  let data = null;
  try {
    data = await response.json();
  } catch (err) {
    data = null; // an empty or non-JSON answer
  }
  if (!response.ok) {
    const message = (data && typeof data.error === 'string' && data.error) || `请求失败（HTTP ${response.status}）`;
    const error = new ApiError(response.status, message, (data && data.code) || '', data);
    if (response.status === 401 && !handle401) onUnauthorized(error);
    throw error;
  }
  return data ?? {};
}

/** "?a=1&b=2" from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && String(v).trim() !== '') q.set(k, String(v).trim());
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

/** A call id as a path segment. */
export const callPath = (callId, tail = '') => `/api/calls/${encodeURIComponent(callId)}${tail}`;
