// Code Runner's browser app: a small single-page app with hash routes (#/home, #/problem/12 ...).
//
// Every page is a function `render(container, ...params, ctx)` that fills `container` (the <main>
// element, already emptied) and may return a cleanup function, called before the next page.
//
// The page context `ctx`, handed to every page (and to renderProblem of problem.js):
//   ctx.api       the API client of api.js: api.get(path), api.post(path, body), api.put(path, body,
//                 {headers}), api.del(path), api.request(method, path, {body, auth, headers}).
//                 Resolves to the JSON body (null for 204); rejects with an ApiError
//                 {message, status, problem (RFC 9457 object), retryAfter (seconds for 429/503)}.
//                 It adds the in-memory access token and refreshes it once on a 401.
//   ctx.user      the signed-in user, as GET /auth/me returns it:
//                 {id, email, displayName, level, role}; role is "student", "teacher" or "admin".
//   ctx.navigate  navigate("/problem/12") (or "#/problem/12") goes to that route.
//   ctx.announce  announce("Saved") says a short text through the polite live region (screen
//                 readers); use it for results that appear without a page change.
//
// Pages must not use inline styles or scripts (the CSP forbids them): use the classes of app.css.

import {createApi} from "./api.js";
import {h, clear} from "./dom.js";
import {renderSignIn, renderSignUp} from "./pages/auth.js";
import {renderHome} from "./pages/home.js";
import {renderProgress} from "./pages/progress.js";
import {renderResult} from "./pages/result.js";
import {renderTeacherList, renderTeacherEdit} from "./pages/teacher.js";
import {renderProblem} from "./problem.js";
import "./app.css";
import "./problem.css";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const live = document.getElementById("announcer");

let user = null;
let cleanup = null;

function announce(text) {
  // Cleared first, so the same text twice is announced twice.
  live.textContent = "";
  window.setTimeout(() => {
    live.textContent = text;
  }, 50);
}

function navigate(path) {
  const hash = path.startsWith("#") ? path : `#${path.startsWith("/") ? path : `/${path}`}`;
  if (window.location.hash === hash) route();
  else window.location.hash = hash;
}

const api = createApi({
  onSignedOut: () => {
    user = null;
    navigate("/signin");
  },
});
const ctx = {api, announce, navigate, get user() {
  return user;
}};

async function loadUser() {
  user = await api.get("/auth/me");
  renderNav();
  return user;
}

async function signOut() {
  await api.logout().catch(() => undefined);
  user = null;
  renderNav();
  announce("You are signed out.");
  navigate("/signin");
}

function renderNav() {
  clear(nav);
  const current = window.location.hash || "#/";
  const link = (href, text) => h("li", {}, h("a", {href, "aria-current": current === href ? "page" : null}, text));
  if (!user) {
    nav.append(h("ul", {}, link("#/signin", "Sign in"), link("#/signup", "Create account")));
    return;
  }
  const staff = user.role === "teacher" || user.role === "admin";
  nav.append(
    h(
      "ul",
      {},
      link("#/home", "My lessons"),
      link("#/progress", "My progress"),
      staff ? link("#/teacher", "Teacher") : null,
      h("li", {}, h("button", {type: "button", class: "link-button", id: "signout", onclick: () => signOut()}, "Sign out")),
    ),
  );
}

// Routes: [pattern, page, needs a signed-in user].
const ROUTES = [
  [/^\/signin$/, (c) => renderSignIn(c, ctx, {onSignedIn: afterSignIn}), false],
  [/^\/signup$/, (c) => renderSignUp(c, ctx, {onSignedIn: afterSignIn}), false],
  [/^\/(home)?$/, (c) => renderHome(c, ctx), true],
  [/^\/progress$/, (c) => renderProgress(c, ctx), true],
  [/^\/result\/([A-Za-z0-9._:-]{1,128})$/, (c, id) => renderResult(c, id, ctx), true],
  [/^\/teacher$/, (c) => renderTeacherList(c, ctx), true],
  [/^\/teacher\/(\d+)$/, (c, id) => renderTeacherEdit(c, Number(id), ctx), true],
  [/^\/problem\/(\d+)$/, (c, id) => renderProblem(c, Number(id), ctx), true],
];

async function afterSignIn() {
  await loadUser();
  announce(`Hello, ${user.displayName}! You are signed in.`);
  navigate("/home");
}

// Each route() call is one generation: a page that finishes loading after a newer one started
// (a quick click, the first route racing start()) is discarded, never shown under the newer one.
let generation = 0;

async function route() {
  const mine = ++generation;
  const path = (window.location.hash || "#/").slice(1) || "/";
  if (typeof cleanup === "function") {
    try {
      cleanup();
    } catch {
      /* a page's cleanup must not stop the next page */
    }
  }
  cleanup = null;
  clear(main);
  renderNav();
  const found = ROUTES.map(([re, page, auth]) => [re.exec(path), page, auth]).find(([m]) => m);
  if (!found) {
    main.append(h("h1", {tabindex: "-1"}, "Page not found"), h("p", {}, h("a", {href: "#/home"}, "Go to my lessons")));
    focusHeading();
    return;
  }
  const [match, page, needsUser] = found;
  if (needsUser && !user) {
    navigate("/signin");
    return;
  }
  if (!needsUser && user && /^\/sign(in|up)$/.test(path)) {
    navigate("/home");
    return;
  }
  main.setAttribute("aria-busy", "true");
  // The page renders into its own element: if it is superseded, its late content lands there,
  // out of the document.
  const view = h("div", {class: "view"});
  main.append(view);
  try {
    const done = await page(view, ...match.slice(1));
    if (mine !== generation) {
      if (typeof done === "function") done();
      return;
    }
    cleanup = done;
  } catch (err) {
    if (mine !== generation) return;
    clear(main);
    main.append(
      h("h1", {tabindex: "-1"}, "Something went wrong"),
      h("p", {class: "message error", role: "alert"}, err && err.message ? err.message : String(err)),
      h("p", {}, h("a", {href: "#/home"}, "Go to my lessons")),
    );
  } finally {
    if (mine === generation) main.removeAttribute("aria-busy");
  }
  focusHeading();
}

function focusHeading() {
  // After a page change, focus moves to its heading, so keyboard and screen reader users start there.
  const heading = main.querySelector("h1");
  if (!heading) return;
  if (!heading.hasAttribute("tabindex")) heading.setAttribute("tabindex", "-1");
  document.title = `${heading.textContent} · Code Runner`;
  heading.focus();
}

async function start() {
  window.addEventListener("hashchange", route);
  // The skip link must not change the hash (that is the router's): it moves the focus itself.
  document.querySelector(".skip-link").addEventListener("click", (event) => {
    event.preventDefault();
    main.focus();
  });
  // The access token is in memory only: after a reload the refresh cookie signs us in again.
  if (await api.refresh()) {
    try {
      await loadUser();
    } catch {
      user = null;
    }
  }
  document.body.classList.add("ready");
  await route();
}

start();
