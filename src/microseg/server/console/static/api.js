// The REST client: every call carries the token the user logged in with; errors arrive as
// RFC 7807 problem+json and are thrown as ApiError so views can show the server's own words.

const TOKEN_KEY = "microseg.token";

export class ApiError extends Error {
  constructor(status, problem) {
    const body = typeof problem === "object" && problem !== null ? problem : { detail: String(problem) };
    super(body.detail || body.title || `HTTP ${status}`);
    this.status = status;
    this.problem = body;
  }

  /** One line per problem: the detail, then each invalid field. */
  lines() {
    const out = [this.problem.title ? `${this.problem.title}: ${this.message}` : this.message];
    for (const p of this.problem.problems || []) out.push(`${p.object} ${p.field}: ${p.message}`);
    return out;
  }
}

// sessionStorage, not localStorage: a token should not outlive the browser tab that used it.
export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export function url(path, params = {}) {
  const found = new URL("/api/v1" + path, location.origin);
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") found.searchParams.set(key, String(value));
  }
  return found;
}

export async function call(method, path, { body, params, headers } = {}) {
  const sent = { Authorization: `Bearer ${token()}`, ...(headers || {}) };
  if (body !== undefined) sent["Content-Type"] = "application/json";
  const response = await fetch(url(path, params), {
    method,
    headers: sent,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export const get = (path, params) => call("GET", path, { params });
export const post = (path, body, params) => call("POST", path, { body, params });
export const put = (path, body) => call("PUT", path, { body });
export const del = (path) => call("DELETE", path);

/** Every item of an id-paged, oldest-first listing (events, audit), at most `pages` pages. */
export async function allAfter(path, params = {}, pages = 20) {
  const items = [];
  let after = 0;
  for (let page = 0; page < pages; page += 1) {
    const found = (await get(path, { ...params, after, limit: 1000 })).items;
    items.push(...found);
    if (found.length < 1000) break;
    after = found[found.length - 1].id;
  }
  return items;
}

/** Names of the workloads a kubectl-style selector picks (the "matches N workloads" preview). */
export async function matching(selector) {
  const found = await get("/workloads", { selector, limit: 10000 });
  return found.items.map((w) => w.metadata.name);
}
