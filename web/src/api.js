// The API client. The access token lives in this module's memory only (never in storage); the
// refresh token is the HttpOnly cookie `cr_refresh` (Path=/auth, SameSite=Strict) that the
// gateway sets at sign-in and rotates on every refresh, so page scripts never see it.
//
// Every failure is thrown as an ApiError carrying an RFC 9457 problem object
// ({type, title, status, detail, ...}); for 429 and 503 `retryAfter` holds the seconds to wait.

const CSRF_HEADER = {"X-Requested-With": "coderunner"};

export class ApiError extends Error {
  constructor(problem, retryAfter = null) {
    super(problem.detail || problem.title || `HTTP ${problem.status}`);
    this.name = "ApiError";
    this.problem = problem;
    this.status = problem.status;
    this.retryAfter = retryAfter;  // seconds, or null
  }
}

function retryAfterSeconds(res) {
  const value = res.headers.get("Retry-After");
  if (!value) return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds);
  const date = Date.parse(value);  // the HTTP-date form
  return Number.isNaN(date) ? null : Math.max(0, Math.round((date - Date.now()) / 1000));
}

async function problemOf(res) {
  let body = null;
  try {
    body = await res.json();
  } catch {
    body = null;
  }
  const problem = body && typeof body === "object" && !Array.isArray(body) ? body : {};
  return {
    type: problem.type || "about:blank",
    title: problem.title || res.statusText || "Request failed",
    status: problem.status || res.status,
    ...problem,
  };
}

function networkProblem(err) {
  return new ApiError({type: "about:blank", title: "Network error", status: 0, detail: "We could not reach Code Runner. Check your connection and try again."});
}

export function createApi({onSignedOut} = {}) {
  let accessToken = null;
  let refreshing = null;  // one refresh at a time, shared by concurrent 401s

  async function send(method, path, {body, auth = true, headers = {}} = {}) {
    const init = {method, headers: {Accept: "application/json", ...headers}, credentials: "same-origin"};
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    if (auth && accessToken) init.headers.Authorization = `Bearer ${accessToken}`;
    try {
      return await fetch(path, init);
    } catch (err) {
      throw networkProblem(err);
    }
  }

  async function parse(res) {
    if (res.ok) {
      if (res.status === 204) return null;
      const text = await res.text();
      return text ? JSON.parse(text) : null;
    }
    throw new ApiError(await problemOf(res), retryAfterSeconds(res));
  }

  function takeTokens(pair) {
    accessToken = pair.accessToken;  // the pair's refreshToken is dropped: the cookie holds it
    return {...pair, refreshToken: undefined};
  }

  /** Ask for a new access token with the refresh cookie. True when signed in again. */
  async function refresh() {
    if (!refreshing) {
      refreshing = (async () => {
        // No body: the cookie is the refresh token (and the header lets the gateway accept it).
        const res = await send("POST", "/auth/refresh", {auth: false, headers: CSRF_HEADER});
        if (!res.ok) {
          accessToken = null;
          return false;
        }
        takeTokens(await res.json());
        return true;
      })().catch(() => false).finally(() => {
        refreshing = null;
      });
    }
    return refreshing;
  }

  /** request(method, path, {body, auth, headers}) -> the JSON body (null for 204). */
  async function request(method, path, options = {}) {
    const auth = options.auth !== false;
    let res = await send(method, path, options);
    if (res.status === 401 && auth && accessToken !== null) {
      // The access token expired (15 minutes): one silent refresh, then the request once more.
      if (await refresh()) res = await send(method, path, options);
      else if (onSignedOut) onSignedOut();
    }
    return parse(res);
  }

  return {
    request,
    get: (path, options) => request("GET", path, options),
    post: (path, body, options = {}) => request("POST", path, {...options, body}),
    put: (path, body, options = {}) => request("PUT", path, {...options, body}),
    del: (path, options) => request("DELETE", path, options),
    refresh,
    get signedIn() {
      return accessToken !== null;
    },
    async login(email, password) {
      const pair = await parse(await send("POST", "/auth/login", {body: {email, password}, auth: false}));
      return takeTokens(pair);
    },
    async logout() {
      try {
        // No body: the gateway revokes the cookie's login and clears the cookie.
        await send("POST", "/auth/logout", {auth: false, headers: CSRF_HEADER});
      } finally {
        accessToken = null;
      }
    },
  };
}
