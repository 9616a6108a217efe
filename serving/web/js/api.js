// The API client: JSON over fetch with the JWT, and the rotating refresh token.
//
// The access token (15 min) lives only in memory; the refresh token in sessionStorage (this
// tab only), so a reload logs back in with one /auth/refresh. Each refresh token works once:
// refreshes are single-flight, since two concurrent ones would present the same token twice
// and the server would revoke the whole login as stolen.

const REFRESH_KEY = "reelrank.refresh";
const EARLY_MS = 30_000; // refresh this long before the access token expires

export class ApiError extends Error {
  constructor(status, body) {
    const err = body && body.error;
    // A 422 names each field: "password: String should have at least 8 characters".
    const fields = err && err.fields ? err.fields.map((f) => `${f.field}: ${f.message}`) : [];
    super(fields.join("; ") || (err && err.message) || (body && body.detail) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

export class Api {
  constructor(base = "/api/v1") {
    this.base = base;
    this.access = null;
    this.expiresAt = 0;
    this.refreshing = null;
    this.onSignedOut = () => {};
  }

  get hasSession() {
    return Boolean(this.access || sessionStorage.getItem(REFRESH_KEY));
  }

  authHeader() {
    return this.access ? { Authorization: `Bearer ${this.access}` } : {};
  }

  keep(pair) {
    this.access = pair.access_token;
    this.expiresAt = Date.now() + pair.expires_in * 1000;
    sessionStorage.setItem(REFRESH_KEY, pair.refresh_token);
  }

  forget() {
    this.access = null;
    this.expiresAt = 0;
    sessionStorage.removeItem(REFRESH_KEY);
  }

  async register(username, email, password) {
    await this.raw("POST", "/auth/register", { username, email, password });
    return this.login(username, password);
  }

  async login(username, password) {
    this.keep(await this.raw("POST", "/auth/token", { username, password }));
  }

  async logout() {
    const refresh = sessionStorage.getItem(REFRESH_KEY);
    try {
      if (refresh) await this.request("POST", "/auth/logout", { body: { refresh_token: refresh } });
    } finally {
      this.forget();
      this.onSignedOut();
    }
  }

  /** A new token pair for the stored refresh token (one request however many callers). */
  refresh() {
    if (!this.refreshing) {
      const token = sessionStorage.getItem(REFRESH_KEY);
      this.refreshing = (token ? this.raw("POST", "/auth/refresh", { refresh_token: token })
        : Promise.reject(new ApiError(401, null)))
        .then((pair) => this.keep(pair))
        .catch((e) => {
          if (e.status === 401) {
            this.forget();
            this.onSignedOut();
          }
          throw e;
        })
        .finally(() => { this.refreshing = null; });
    }
    return this.refreshing;
  }

  /** One unauthenticated JSON call; ApiError with the server's message on failure. */
  async raw(method, path, body, headers = {}, keepalive = false) {
    const init = { method, headers: { ...headers }, keepalive };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const r = await fetch(this.base + path, init);
    const text = await r.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = { detail: text }; }
    if (!r.ok) throw new ApiError(r.status, data);
    return data;
  }

  /** An authenticated call: refreshes ahead of expiry, and once more on a 401. */
  async request(method, path, { body, query, keepalive = false } = {}) {
    if (query) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
      const s = q.toString();
      if (s) path += (path.includes("?") ? "&" : "?") + s;
    }
    if (!this.access || Date.now() > this.expiresAt - EARLY_MS) await this.refresh();
    try {
      return await this.raw(method, path, body, this.authHeader(), keepalive);
    } catch (e) {
      if (e.status !== 401) throw e;
      await this.refresh();
      return this.raw(method, path, body, this.authHeader(), keepalive);
    }
  }

  get(path, query) { return this.request("GET", path, { query }); }
  post(path, body, opts = {}) { return this.request("POST", path, { body, ...opts }); }
  del(path) { return this.request("DELETE", path); }
}
