// The API client: the bearer token (kept in sessionStorage only, never in
// a cookie or a URL), JSON calls, and the event stream, read with fetch
// because EventSource cannot send an Authorization header.

const KEY = 'lifeboat.token';

/** The bearer token of this tab. */
export const token = {
  get: () => sessionStorage.getItem(KEY) || '',
  set: (t) => (t ? sessionStorage.setItem(KEY, t) : sessionStorage.removeItem(KEY)),
};

/** An API failure: the HTTP status (0: no answer) and the API's message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function headers(accept) {
  const h = new Headers({ Accept: accept });
  if (token.get()) h.set('Authorization', 'Bearer ' + token.get());
  return h;
}

async function request(path, init) {
  if (!path.startsWith('/api/v1/')) throw new ApiError(0, 'not an API path: ' + path);
  let resp;
  try {
    resp = await fetch(path, { cache: 'no-store', ...init });
  } catch (e) {
    throw new ApiError(0, 'the node does not answer (' + e.message + ')');
  }
  if (resp.ok) return resp;
  let msg = resp.status + ' ' + resp.statusText;
  try {
    const body = await resp.json();
    if (body && body.error) msg = body.error;
  } catch { /* not JSON: keep the status line */ }
  throw new ApiError(resp.status, msg);
}

/** GET (or POST with a JSON body) under /api/v1; resolves to the JSON answer. */
export async function call(path, { method = 'GET', body } = {}) {
  const init = { method, headers: headers('application/json') };
  if (body !== undefined) {
    init.headers.set('Content-Type', 'application/json');
    init.body = JSON.stringify(body);
  }
  const resp = await request('/api/v1' + path, init);
  const text = await resp.text();
  return text ? JSON.parse(text) : null;
}

/** GET an API path (a run's report) as a Blob. */
export async function blob(path) {
  return (await request(path, { headers: headers('*/*') })).blob();
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Follows /api/v1/events/stream: h.status(status) for each `status`
 * message, h.event(event) for each `event` message, h.state(text, ok) when
 * the connection changes, h.fail(error) when the stream cannot go on
 * (401, 403, 404: the caller decides). Reconnects with back-off, resuming
 * after the last event seen. Returns a function that stops it.
 */
export function follow(h, after = 0) {
  let stopped = false;
  let ctrl = null;
  (async () => {
    let delay = 1000;
    while (!stopped) {
      ctrl = new AbortController();
      try {
        const q = after ? '?after=' + after : '';
        const resp = await request('/api/v1/events/stream' + q, { headers: headers('text/event-stream'), signal: ctrl.signal });
        h.state('live', true);
        delay = 1000;
        await readEvents(resp.body, (type, data) => {
          const v = JSON.parse(data);
          if (type === 'status') h.status(v);
          if (type === 'event') {
            if (v.seq > after) after = v.seq;
            h.event(v);
          }
        });
        if (!stopped) h.state('reconnecting: the stream ended', false);
      } catch (e) {
        if (stopped) return;
        if ([401, 403, 404].includes(e.status)) return h.fail(e);
        h.state('reconnecting in ' + delay / 1000 + ' s: ' + e.message, false);
      }
      await sleep(delay);
      delay = Math.min(delay * 2, 30000);
    }
  })();
  return () => {
    stopped = true;
    if (ctrl) ctrl.abort();
  };
}

/** Parses a Server-Sent Events body: messages are blank-line separated lines of "field: value". */
async function readEvents(body, dispatch) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  let type = '';
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    const lines = buf.split('\n');
    buf = lines.pop();
    for (const raw of lines) {
      const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
      if (line === '') {
        if (data.length) dispatch(type || 'message', data.join('\n'));
        type = '';
        data = [];
        continue;
      }
      if (line.startsWith(':')) continue; // a comment (keep-alive)
      const i = line.indexOf(':');
      const field = i < 0 ? line : line.slice(0, i);
      let val = i < 0 ? '' : line.slice(i + 1);
      if (val.startsWith(' ')) val = val.slice(1);
      if (field === 'event') type = val;
      if (field === 'data') data.push(val);
    }
  }
}
