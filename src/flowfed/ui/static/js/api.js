// REST client: the bearer token lives in sessionStorage (gone when the tab closes).
const KEY = "flowfed.token";

export const token = {
  get: () => sessionStorage.getItem(KEY),
  set: (t) => sessionStorage.setItem(KEY, t),
  clear: () => sessionStorage.removeItem(KEY),
};

/** An RFC 9457 problem (or a network failure) as an Error with status and items. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
    this.errors = problem?.errors || [];
  }
}

// The page being shown owns the requests in flight: leaving it aborts them, so a slow
// answer for the previous page can never draw over the current one.
let pageSignal = null;
export const setPageSignal = (s) => { pageSignal = s; };

export async function api(path, { method = "GET", body, signal = pageSignal } = {}) {
  const headers = { Accept: "application/json" };
  const t = token.get();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {
    method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { detail: text }; }
  if (!res.ok) {
    if (res.status === 401 && path !== "/api/v1/me") {
      token.clear();
      location.hash = "#/signin";
    }
    throw new ApiError(res.status, data);
  }
  return data;
}

/** GET that answers null for 404 (an endpoint another part of flowfed may not serve yet). */
export async function optional(path) {
  try { return await api(path); } catch (e) {
    if (e.status === 404 || e.status === 405) return null;
    throw e;
  }
}

export const enc = encodeURIComponent;
