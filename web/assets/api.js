// api.js: how the pages talk to the server. Every call goes to the JSON API under /v1/ (the
// same one curl and other clients use); nothing here knows more about the catalogue than
// the API says.

const TOKEN_KEY = 'lookalike.token';

/** An API call that failed: the HTTP status, the gRPC code and the server's message. */
export class APIError extends Error {
  constructor(httpStatus, code, message) {
    super(message);
    this.httpStatus = httpStatus;
    this.code = code;
  }
}

/** The bearer token this tab uses ('' for none). */
export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

/** Remembers (or with '' forgets) the bearer token for this tab. */
export function setToken(t) {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
}

const unauthenticatedListeners = [];

/** Calls fn(message) whenever the server asks for a token (HTTP 401). */
export function onUnauthenticated(fn) {
  unauthenticatedListeners.push(fn);
}

function headers() {
  const h = new Headers();
  const t = token();
  if (t) h.set('Authorization', 'Bearer ' + t);
  return h;
}

/** A query string from an object; arrays become repeated keys, empty values are left out. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    for (const x of Array.isArray(v) ? v : [v]) {
      if (x !== undefined && x !== null && x !== '') q.append(k, String(x));
    }
  }
  const s = q.toString();
  return s ? '?' + s : '';
}

async function failure(resp) {
  let code = 0;
  let message = resp.statusText || 'HTTP ' + resp.status;
  try {
    const body = await resp.json();
    code = body.code || 0;
    message = body.message || message;
  } catch {
    // not a JSON error body
  }
  if (resp.status === 401) unauthenticatedListeners.forEach((fn) => fn(message));
  return new APIError(resp.status, code, message);
}

/**
 * One unary call: call('GET', '/v1/stats'), call('POST', '/v1/decisions', {body: {...}}),
 * call('POST', '/v1/search/image', {form: formData}). Resolves to the response message.
 */
export async function call(method, path, { params, body, form, signal } = {}) {
  const init = { method, headers: headers(), signal };
  if (form) {
    init.body = form;
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers.set('Content-Type', 'application/json');
  }
  const resp = await fetch(path + query(params), init);
  if (!resp.ok) throw await failure(resp);
  return resp.json();
}

/**
 * A server-streaming call (newline-delimited JSON, one {"result": ...} or {"error": ...} per
 * line): calls each(message) for every result, resolves when the stream ends.
 */
export async function stream(path, params, each, signal) {
  const resp = await fetch(path + query(params), { headers: headers(), signal });
  if (!resp.ok) throw await failure(resp);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  const line = (text) => {
    if (!text.trim()) return;
    const msg = JSON.parse(text);
    if (msg.error) throw new APIError(resp.status, msg.error.code, msg.error.message);
    each(msg.result);
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (value) buf += value;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      line(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
    if (done) break;
  }
  line(buf);
}

/** Where a product's kept photo is served. */
export function photoURL(productId, photoId) {
  return `/v1/products/${encodeURIComponent(productId)}/photos/${encodeURIComponent(photoId)}`;
}

/**
 * Shows a kept photo in img. With a token the photo is fetched with it (an <img> cannot send
 * one) and shown from a blob.
 */
export async function showPhoto(img, productId, photoId) {
  const url = photoURL(productId, photoId);
  if (!token()) {
    img.src = url;
    return;
  }
  const resp = await fetch(url, { headers: headers() });
  if (!resp.ok) throw await failure(resp);
  img.src = URL.createObjectURL(await resp.blob());
  img.addEventListener('load', () => URL.revokeObjectURL(img.src), { once: true });
}

/** protojson writes 64-bit integers as strings; this reads them (and missing ones) as numbers. */
export function num(v) {
  return v === undefined || v === null ? 0 : Number(v);
}
