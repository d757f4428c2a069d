// Calls to the platform's APIs: JSON in, JSON out, problem documents (RFC 9457) as errors.
// The access token lives in this module's memory and in sessionStorage (this tab only);
// it is never put in a URL and never logged.

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

const TOKEN_KEY = (app) => `order-platform:${app}:token`;

export class Session {
  constructor(app) {
    this.app = app;
    this.token = null;
    this.expiresAt = 0;
    this.scopes = [];
    try {
      const saved = JSON.parse(sessionStorage.getItem(TOKEN_KEY(app)) || "null");
      if (saved && saved.expiresAt > Date.now()) Object.assign(this, saved);
    } catch { /* no saved session */ }
  }

  get signedIn() { return Boolean(this.token) && this.expiresAt > Date.now(); }

  hasScope(scope) { return this.scopes.includes(scope); }

  async signIn(username, password) {
    const body = await request("", "/web/session", { method: "POST", body: { app: this.app, username, password } });
    this.token = body.access_token;
    this.expiresAt = Date.now() + (body.expires_in || 300) * 1000;
    this.scopes = (body.scope || "").split(" ").filter(Boolean);
    sessionStorage.setItem(TOKEN_KEY(this.app), JSON.stringify(
      { token: this.token, expiresAt: this.expiresAt, scopes: this.scopes }));
  }

  signOut() {
    this.token = null; this.expiresAt = 0; this.scopes = [];
    sessionStorage.removeItem(TOKEN_KEY(this.app));
  }

  call(base, path, options = {}) {
    return request(base, path, { ...options, token: this.token });
  }
}

export async function request(base, path, { method = "GET", body, token, query } = {}) {
  const url = new URL(base + path, window.location.origin);
  for (const [k, v] of Object.entries(query || {})) if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "omit" });
  } catch (err) {
    throw new ApiError(0, { title: "Network error", detail: "The service cannot be reached." });
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

let config = null;
export async function webConfig() {
  if (!config) config = await request("", "/web/config");
  return config;
}
