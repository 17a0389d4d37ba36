// The problem page (issue 12): statement, examples, a Python editor, Run / Check examples / Submit
// with live output over server-sent events, per-test results, the verdict and beginner feedback.
//
// Everything is built with DOM calls and classes (the gateway's CSP allows no inline script or
// style); the statement's Markdown is the only HTML we insert, and DOMPurify sanitises it first.

import "./problem.css";
import { EditorView, basicSetup } from "codemirror";
import { keymap } from "@codemirror/view";
import { indentWithTab } from "@codemirror/commands";
import { indentUnit } from "@codemirror/language";
import { python } from "@codemirror/lang-python";
import { marked } from "marked";
import DOMPurify from "dompurify";

const CODE_KEY = (problemId) => `cr:code:${problemId}`;
const SIGN_IN = "#/signin";

// --- small helpers ------------------------------------------------------------------------------

/** An element: h("p", {class: "x", text: "hi", "aria-live": "polite"}, child, ...). Never a style. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key === "style") throw new Error("no inline styles");
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

function saveCode(problemId, code) {
  try {
    localStorage.setItem(CODE_KEY(problemId), code);
  } catch {
    // Private mode or a full quota: the editor still works, the code is just not kept.
  }
}

function loadCode(problemId) {
  try {
    return localStorage.getItem(CODE_KEY(problemId));
  } catch {
    return null;
  }
}

/** The shell's api wrapper, whatever its exact calling style: api(path, {method, body}). */
function call(api, method, path, body) {
  const init = { method };
  if (body !== undefined) init.body = body;
  if (typeof api === "function") return api(path, init);
  const fn = api[method.toLowerCase()] || api.request;
  if (typeof fn === "function") return method === "GET" ? fn.call(api, path) : fn.call(api, path, body);
  throw new Error("the api wrapper has no way to send " + method);
}

function seconds(value, fallback) {
  const n = Number.parseInt(value, 10);
  return Number.isFinite(n) && n > 0 ? n : fallback;
}

function plural(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

const GRADE_TEXT = {
  ACCEPTED: ["Accepted!", "Every test passes. Well done! 🎉"],
  WRONG_ANSWER: ["Not quite", "Your program runs, but some answers are different from what was expected."],
  TIME_LIMIT: ["Too slow", "Your program took too long. Is there a loop that never stops?"],
  MEMORY_LIMIT: ["Too much memory", "Your program used too much memory."],
  RUNTIME_ERROR: ["Your program crashed", "Python stopped with an error while running your program."],
  OUTPUT_LIMIT: ["Too much output", "Your program printed far too much."],
  COMPILE_ERROR: ["Python cannot read your program", "There is a typing mistake, so the program could not start."],
  SANDBOX_ERROR: ["Something went wrong on our side", "It is not your fault. Please try again in a moment."],
};

const TEST_TEXT = {
  WRONG_ANSWER: "wrong answer",
  TIME_LIMIT: "too slow",
  MEMORY_LIMIT: "too much memory",
  RUNTIME_ERROR: "crashed",
  OUTPUT_LIMIT: "too much output",
  COMPILE_ERROR: "could not start",
  SANDBOX_ERROR: "not checked (our fault, try again)",
};

const RUN_TEXT = {
  OK: "Finished",
  RUNTIME_ERROR: "Your program crashed",
  TIME_LIMIT: "Your program took too long",
  MEMORY_LIMIT: "Your program used too much memory",
  OUTPUT_LIMIT: "Your program printed too much",
  SANDBOX_ERROR: "Something went wrong on our side (not your fault); try again",
};

const STATE_TEXT = {
  sending: "Sending your program…",
  queued: "Waiting for a free computer…",
  running: "Running…",
  grading: "Checking your answers…",
  reconnecting: "Connection lost, reconnecting…",
};

// --- the page -----------------------------------------------------------------------------------

/**
 * Render problem ``problemId`` into ``container``.
 * ctx = {api, user, navigate, announce}. Returns a clean-up function (closes any live stream).
 */
export async function renderProblem(container, problemId, ctx) {
  const page = new ProblemPage(container, String(problemId), ctx);
  await page.load();
  return () => page.destroy();
}

class ProblemPage {
  constructor(container, problemId, ctx) {
    this.container = container;
    this.problemId = problemId;
    this.ctx = ctx;
    this.api = ctx.api;
    this.announce = typeof ctx.announce === "function" ? ctx.announce : () => {};
    this.job = null; // the live job, if any
    this.cooldownTimer = null;
    this.destroyed = false;
  }

  get alive() {
    return !this.destroyed && this.container.isConnected;
  }

  destroy() {
    this.destroyed = true;
    if (this.job) this.job.close();
    if (this.cooldownTimer) clearInterval(this.cooldownTimer);
    if (this.editor) {
      saveCode(this.problemId, this.code());
      this.editor.destroy();
    }
  }

  async load() {
    this.container.replaceChildren(h("p", { class: "pp-loading", role: "status", text: "Loading the problem…" }));
    let problem;
    let tests = [];
    try {
      [problem, tests] = await Promise.all([
        call(this.api, "GET", `/problems/${encodeURIComponent(this.problemId)}`),
        call(this.api, "GET", `/problems/${encodeURIComponent(this.problemId)}/tests`).catch(() => []),
      ]);
    } catch (err) {
      const missing = err && err.status === 404;
      this.container.replaceChildren(
        h(
          "section",
          { class: "pp-error", role: "alert" },
          h("h1", { text: missing ? "Problem not found" : "Could not load the problem" }),
          h("p", { text: missing ? "There is no problem with this number." : describeError(err) }),
          h("p", {}, h("a", { href: "#/", text: "Back to the start" })),
        ),
      );
      return;
    }
    if (!this.alive) return;
    this.problem = problem;
    this.publicTests = Array.isArray(tests) ? tests : [];
    this.build();
  }

  // --- layout -----------------------------------------------------------------------------------

  build() {
    const p = this.problem;
    const statement = h("div", { class: "pp-statement-text" });
    statement.innerHTML = DOMPurify.sanitize(marked.parse(p.statement || ""), {
      FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select"],
      FORBID_ATTR: ["style"],
    });
    for (const link of statement.querySelectorAll("a[href]")) {
      link.setAttribute("rel", "noopener noreferrer");
    }

    const hint = p.hint
      ? h("details", { class: "pp-hint" }, h("summary", { text: "Need a hint?" }), h("p", { text: p.hint }))
      : null;

    const examples = this.buildExamples();

    // The editor lives in a shadow root: CodeMirror's own styles then go into a constructed style
    // sheet (allowed by the CSP), not a <style> element (refused without 'unsafe-inline').
    this.editorHost = h("div", { class: "pp-editor", id: "pp-editor" });
    this.stdin = h("textarea", {
      id: "pp-stdin",
      class: "pp-stdin",
      rows: 3,
      spellcheck: "false",
      autocapitalize: "off",
      autocomplete: "off",
      "aria-describedby": "pp-stdin-help",
    });

    this.runButton = h("button", { type: "button", id: "pp-run", class: "pp-button pp-button--run", text: "▶ Run" });
    this.checkButton = h("button", {
      type: "button",
      id: "pp-check",
      class: "pp-button pp-button--check",
      text: "Check examples",
    });
    this.submitButton = h("button", {
      type: "button",
      id: "pp-submit",
      class: "pp-button pp-button--submit",
      text: "Submit",
    });
    this.resetButton = h("button", {
      type: "button",
      id: "pp-reset",
      class: "pp-button pp-button--quiet",
      text: "Start over",
    });
    this.buttons = [this.runButton, this.checkButton, this.submitButton];

    this.status = h("p", { id: "pp-status", class: "pp-status", role: "status", "data-state": "idle" });
    this.countdown = h("p", { id: "pp-countdown", class: "pp-countdown", hidden: true });
    this.output = h("pre", {
      id: "pp-output",
      class: "pp-output",
      role: "log",
      "aria-live": "polite",
      "aria-labelledby": "pp-output-title",
      tabindex: "0",
    });
    this.outputEmpty = h("p", {
      class: "pp-output-empty",
      id: "pp-output-empty",
      text: "Press Run to see what your program prints.",
    });
    this.summary = h("div", { id: "pp-summary", class: "pp-summary", "aria-live": "polite" });
    this.testList = h("ol", { id: "pp-tests", class: "pp-tests", "aria-label": "Test results" });
    this.feedback = h("div", { id: "pp-feedback", class: "pp-feedback-area", "aria-live": "polite" });
    this.results = h(
      "section",
      { class: "pp-results", id: "pp-results", "aria-labelledby": "pp-results-title", hidden: true },
      h("h2", { id: "pp-results-title", class: "pp-h2", text: "Results" }),
      this.summary,
      this.testList,
      this.feedback,
    );

    const meta = [p.level, ...(p.tags || [])].filter(Boolean);
    const article = h(
      "article",
      { class: "pp", "aria-labelledby": "pp-title" },
      h(
        "header",
        { class: "pp-header" },
        h("h1", { id: "pp-title", class: "pp-title", text: p.title }),
        meta.length
          ? h("ul", { class: "pp-tags", "aria-label": "Topics" }, meta.map((t) => h("li", { class: "pp-tag", text: t })))
          : null,
      ),
      h(
        "div",
        { class: "pp-layout" },
        h(
          "section",
          { class: "pp-task", "aria-labelledby": "pp-task-title" },
          h("h2", { id: "pp-task-title", class: "pp-h2", text: "Your task" }),
          statement,
          hint,
          examples,
        ),
        h(
          "section",
          { class: "pp-work", "aria-labelledby": "pp-code-label" },
          h("h2", { id: "pp-code-label", class: "pp-h2", text: "Your program" }),
          this.editorHost,
          h(
            "p",
            { class: "pp-help", id: "pp-editor-help" },
            "Tab indents your code. To leave the editor with the keyboard, press ",
            h("kbd", { text: "Esc" }),
            " and then ",
            h("kbd", { text: "Tab" }),
            ". Your code is saved in this browser as you type.",
          ),
          h("label", { for: "pp-stdin", class: "pp-label", text: "Input for Run (optional)" }),
          h("p", {
            class: "pp-help",
            id: "pp-stdin-help",
            text: "What your program reads with input(), one line each.",
          }),
          this.stdin,
          h(
            "div",
            { class: "pp-actions", role: "group", "aria-label": "Run your program" },
            this.runButton,
            this.checkButton,
            this.submitButton,
            this.resetButton,
          ),
          h(
            "p",
            { class: "pp-help pp-actions-help" },
            h("strong", { text: "Run" }),
            " runs your program with the input above. ",
            h("strong", { text: "Check examples" }),
            " tries the examples. ",
            h("strong", { text: "Submit" }),
            " checks every test, hidden ones too, and gives you a score.",
          ),
          this.status,
          this.countdown,
          h(
            "section",
            { class: "pp-output-box", "aria-labelledby": "pp-output-title" },
            h("h2", { id: "pp-output-title", class: "pp-h2", text: "Output" }),
            this.outputEmpty,
            this.output,
          ),
          this.results,
        ),
      ),
    );
    this.container.replaceChildren(article);
    this.mountEditor();

    this.runButton.addEventListener("click", () => this.start("run"));
    this.checkButton.addEventListener("click", () => this.start("check"));
    this.submitButton.addEventListener("click", () => this.start("submit"));
    this.resetButton.addEventListener("click", () => this.resetCode());
    this.setState("idle", "");
  }

  buildExamples() {
    if (!this.publicTests.length) return null;
    const list = h("ol", { class: "pp-examples" });
    this.publicTests.forEach((test, i) => {
      const parts = [h("h3", { class: "pp-h3", text: `Example ${i + 1}` })];
      if (test.script) {
        parts.push(h("p", { class: "pp-io-label", text: "This check runs after your program:" }));
        parts.push(h("pre", { class: "pp-io", text: test.script }));
      } else if (Array.isArray(test.args)) {
        const fn = this.problem.function || "f";
        parts.push(h("p", { class: "pp-io-label", text: "Call" }));
        parts.push(h("pre", { class: "pp-io", text: `${fn}(${test.args.map((a) => JSON.stringify(a)).join(", ")})` }));
        parts.push(h("p", { class: "pp-io-label", text: "Should return" }));
        parts.push(h("pre", { class: "pp-io", text: JSON.stringify(test.expected) }));
      } else {
        parts.push(h("p", { class: "pp-io-label", text: "Input" }));
        parts.push(h("pre", { class: "pp-io", text: test.stdin || "(nothing)" }));
        parts.push(h("p", { class: "pp-io-label", text: "Expected output" }));
        parts.push(h("pre", { class: "pp-io", text: typeof test.expected === "string" ? test.expected : JSON.stringify(test.expected) }));
        if (test.stdin) {
          const use = h("button", {
            type: "button",
            class: "pp-button pp-button--small",
            text: "Use this input",
            "aria-label": `Use this input (example ${i + 1}) for Run`,
          });
          use.addEventListener("click", () => {
            this.stdin.value = test.stdin;
            this.stdin.focus();
            this.announce(`Input of example ${i + 1} copied into the input box.`);
          });
          parts.push(use);
        }
      }
      list.append(h("li", { class: "pp-example", "data-test-id": test.id }, parts));
    });
    return h(
      "section",
      { class: "pp-examples-box", "aria-labelledby": "pp-examples-title" },
      h("h2", { id: "pp-examples-title", class: "pp-h2", text: "Examples" }),
      list,
    );
  }

  mountEditor() {
    const shadow = this.editorHost.attachShadow({ mode: "open" });
    const saved = loadCode(this.problemId);
    const doc = saved !== null ? saved : (this.problem.starterCode || "").replace(/^\n/, "");
    this.editor = new EditorView({
      doc,
      root: shadow,
      parent: shadow,
      extensions: [
        basicSetup,
        keymap.of([indentWithTab]),
        python(),
        indentUnit.of("    "), // Python's four spaces
        EditorView.lineWrapping, // no sideways scrolling on a phone
        EditorView.contentAttributes.of({
          "aria-label": "Your program (Python). Tab indents; press Escape then Tab to leave the editor.",
          autocapitalize: "off",
          spellcheck: "false",
        }),
        EditorView.updateListener.of((update) => {
          if (update.docChanged) saveCode(this.problemId, update.state.doc.toString());
        }),
        editorTheme,
      ],
    });
  }

  code() {
    return this.editor ? this.editor.state.doc.toString() : "";
  }

  resetCode() {
    const starter = (this.problem.starterCode || "").replace(/^\n/, "");
    // A transaction, so Ctrl+Z brings the old code back.
    this.editor.dispatch({ changes: { from: 0, to: this.editor.state.doc.length, insert: starter } });
    saveCode(this.problemId, starter);
    this.announce("The starter code is back. Press Control Z in the editor to undo.");
    this.editor.focus();
  }

  // --- state --------------------------------------------------------------------------------------

  setState(state, text) {
    this.status.dataset.state = state;
    this.status.textContent = text;
    const busy = ["sending", "queued", "running", "grading", "reconnecting"].includes(state);
    const cooling = state === "cooldown";
    for (const b of this.buttons) b.disabled = busy || cooling;
    this.container.querySelector(".pp")?.setAttribute("aria-busy", busy ? "true" : "false");
  }

  clearResults(kind) {
    this.output.replaceChildren();
    this.output.removeAttribute("data-reconciled");
    this.outputEmpty.hidden = true;
    this.summary.replaceChildren();
    this.summary.removeAttribute("data-verdict");
    this.testList.replaceChildren();
    this.feedback.replaceChildren();
    this.results.hidden = kind === "run";
    this.countdown.hidden = true;
  }

  async start(kind) {
    if (this.job) return;
    const code = this.code();
    saveCode(this.problemId, code);
    if (!code.trim()) {
      this.setState("error", "Your program is empty. Write some code first!");
      this.editor.focus();
      return;
    }
    const id = Number.parseInt(this.problemId, 10);
    let path = "/execution/submit";
    let body;
    if (kind === "run") body = { code, stdin: this.stdin.value };
    else if (kind === "check") body = { code, stdin: "", problemId: id };
    else {
      path = "/execution/submit/grade";
      body = { code, problemId: id };
    }
    this.clearResults(kind);
    if (kind !== "run") this.prepareRows(kind);
    this.setState("sending", STATE_TEXT.sending);
    let accepted;
    try {
      accepted = await call(this.api, "POST", path, body);
    } catch (err) {
      if (this.alive) this.refused(err);
      return;
    }
    if (!this.alive) return;
    this.job = new Job(this, kind, accepted);
    this.job.open();
  }

  refused(err) {
    const status = err && err.status;
    if (status === 429) {
      const wait = seconds(err.retryAfter, 60);
      this.cooldown(wait, (n) => `You are running code very fast! Take a little break: try again in ${plural(n, "second", "seconds")}.`);
      this.announce(`Too many runs. You can run again in ${plural(wait, "second", "seconds")}.`);
    } else if (status === 503) {
      const wait = seconds(err.retryAfter, seconds(/estimated wait (\d+)/.exec(err.detail || "")?.[1], 10));
      this.cooldown(wait, (n) => `The computers are busy right now, about ${plural(n, "second", "seconds")}. Try again soon.`, "busy");
      this.announce(`The computers are busy, about ${plural(wait, "second", "seconds")}.`);
    } else if (status === 401) {
      saveCode(this.problemId, this.code());
      this.setState("error", "Please sign in again. Your code is saved.");
      this.announce("Please sign in again. Your code is saved.");
      this.ctx.navigate?.(SIGN_IN);
    } else if (status === 413) {
      this.setState("error", "Your program or its input is too long.");
    } else {
      this.setState("error", describeError(err));
    }
    if (this.results.hidden === false && !this.testList.querySelector(".pp-test--done")) this.results.hidden = true;
  }

  /** Buttons off, a visible countdown, buttons back on at 0. */
  cooldown(total, message, state = "cooldown") {
    if (this.cooldownTimer) clearInterval(this.cooldownTimer);
    const until = Date.now() + total * 1000;
    const tick = () => {
      if (!this.alive) {
        clearInterval(this.cooldownTimer);
        return;
      }
      const left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
      if (left <= 0) {
        clearInterval(this.cooldownTimer);
        this.cooldownTimer = null;
        this.countdown.hidden = true;
        this.countdown.textContent = "";
        this.setState("idle", "You can run your code again.");
        this.announce("You can run your code again.");
        return;
      }
      this.countdown.textContent = message(left);
      this.countdown.dataset.seconds = String(left);
    };
    this.setState("cooldown", state === "busy" ? "The computers are busy." : "Too many runs for now.");
    this.status.dataset.reason = state === "busy" ? "busy" : "rate-limited";
    this.countdown.hidden = false;
    tick();
    this.cooldownTimer = setInterval(tick, 250);
  }

  // --- results --------------------------------------------------------------------------------------

  /** One row per test before any arrives: they light up as their results come in. */
  prepareRows(kind) {
    const p = this.problem;
    const total = kind === "check" ? p.publicTestCount ?? this.publicTests.length : (p.publicTestCount ?? 0) + (p.hiddenTestCount ?? 0);
    for (let i = 0; i < total; i++) {
      this.testList.append(
        h(
          "li",
          { class: "pp-test pp-test--waiting", "data-index": i, "data-state": "waiting" },
          h("span", { class: "pp-test-icon", "aria-hidden": "true", text: "…" }),
          h("span", { class: "pp-test-name", text: `Test ${i + 1}` }),
          h("span", { class: "pp-test-verdict", text: "waiting" }),
        ),
      );
    }
  }

  row(index) {
    let row = this.testList.querySelector(`li[data-index="${index}"]`);
    if (!row) {
      row = h("li", { class: "pp-test", "data-index": index });
      // Keep rows in index order.
      const after = [...this.testList.children].find((r) => Number(r.dataset.index) > index);
      this.testList.insertBefore(row, after || null);
    }
    return row;
  }

  showTest(result) {
    const row = this.row(result.index);
    const passed = result.verdict === "ACCEPTED";
    row.className = `pp-test pp-test--done ${passed ? "pp-test--passed" : "pp-test--failed"}`;
    row.dataset.state = passed ? "passed" : "failed";
    row.dataset.verdict = result.verdict;
    row.dataset.testId = result.testId;
    row.dataset.public = String(result.public);
    const verdictText = passed ? "passed" : `failed: ${TEST_TEXT[result.verdict] || result.verdict}`;
    let name;
    if (result.public) {
      const k = this.publicTests.findIndex((t) => t.id === result.testId);
      name = k >= 0 ? `Example ${k + 1}` : `Test ${result.index + 1}`;
    } else {
      name = "Hidden test";
    }
    const parts = [
      h("span", { class: "pp-test-icon", "aria-hidden": "true", text: passed ? "✔" : "✘" }),
      h("span", { class: "pp-test-name", text: name }),
      result.public ? null : h("span", { class: "pp-lock", role: "img", "aria-label": "locked", text: "🔒" }),
      h("span", { class: "pp-test-verdict", text: verdictText }),
    ];
    if (result.public && !passed) parts.push(this.details(result));
    row.replaceChildren(...parts.filter(Boolean));
    this.numberHidden();
  }

  /** "Hidden test 1, 2, …" in index order, however their results arrived. */
  numberHidden() {
    let n = 0;
    for (const row of this.testList.children) {
      if (row.dataset.public !== "false") continue;
      n += 1;
      const name = row.querySelector(".pp-test-name");
      if (name) name.textContent = `Hidden test ${n}`;
    }
  }

  details(result) {
    const box = h("div", { class: "pp-test-details" });
    if (result.input) {
      box.append(h("p", { class: "pp-io-label", text: "Input" }), h("pre", { class: "pp-io", text: result.input }));
    }
    if (result.expected !== undefined && result.expected !== null) {
      box.append(
        h("div", { class: "pp-compare" },
          h("div", { class: "pp-compare-col" }, h("p", { class: "pp-io-label", text: "Expected" }), h("pre", { class: "pp-io pp-io--expected", text: result.expected })),
          h("div", { class: "pp-compare-col" }, h("p", { class: "pp-io-label", text: "Your program printed" }), h("pre", { class: "pp-io pp-io--actual", text: result.actual || "(nothing)" })),
        ),
      );
    }
    if (result.diff) box.append(renderDiff(result.diff));
    if (result.stderr) {
      box.append(h("p", { class: "pp-io-label", text: "Error messages" }), h("pre", { class: "pp-io pp-io--stderr", text: result.stderr }));
    }
    if (result.feedback) box.append(renderFeedback(result.feedback, "h4"));
    return box;
  }

  showGrade(grade, kind) {
    const [title, text] = GRADE_TEXT[grade.verdict] || [grade.verdict, ""];
    this.summary.dataset.verdict = grade.verdict;
    const score = Math.round(grade.score * 100) / 100;
    if (kind === "check") {
      const all = grade.passed === grade.total;
      this.summary.replaceChildren(
        h(
          "div",
          { class: `pp-verdict ${all ? "pp-verdict--accepted" : "pp-verdict--failed"}` },
          h("p", { class: "pp-verdict-title", text: all ? "All examples pass!" : title }),
          h("p", { class: "pp-verdict-text", text: all ? "Now press Submit to check the hidden tests too." : text }),
          h("p", { class: "pp-verdict-score", text: `${grade.passed} of ${plural(grade.total, "example", "examples")} passed` }),
          h("p", { class: "pp-verdict-code", text: grade.verdict }),
        ),
      );
    } else {
      this.summary.replaceChildren(
        h(
          "div",
          { class: `pp-verdict ${grade.verdict === "ACCEPTED" ? "pp-verdict--accepted" : "pp-verdict--failed"}` },
          h("p", { class: "pp-verdict-title", text: title }),
          h("p", { class: "pp-verdict-text", text }),
          h("p", { class: "pp-verdict-score", id: "pp-score", "data-score": score, text: `Score: ${score} / 100 · ${grade.passed} of ${plural(grade.total, "test", "tests")} passed` }),
          h("p", { class: "pp-verdict-code", text: grade.verdict }),
        ),
      );
    }
    // Feedback for the first failing test (the public ones already show theirs in their row).
    const first = (grade.tests || []).find((t) => t.verdict !== "ACCEPTED");
    if (grade.feedback && !(first && first.public && first.feedback)) {
      this.feedback.replaceChildren(renderFeedback(grade.feedback, "h3"));
    }
  }

  resultsAnnouncement(grade, kind) {
    if (kind === "check") return `${grade.passed} of ${grade.total} examples passed.`;
    const [title] = GRADE_TEXT[grade.verdict] || [grade.verdict];
    return `${title.replace(/[!.]$/, "")}. Score ${Math.round(grade.score)} out of 100.`;
  }
}

// --- one job's live stream -------------------------------------------------------------------------

class Job {
  constructor(page, kind, accepted) {
    this.page = page;
    this.kind = kind;
    this.accepted = accepted;
    this.lastSeq = 0; // the highest `id:` seen: anything at or below it is a repeat
    this.attempt = 0;
    this.streams = { stdout: "", stderr: "" };
    this.source = null;
    this.finished = false;
    this.pollTimer = null;
  }

  close() {
    this.finished = true;
    if (this.source) this.source.close();
    if (this.pollTimer) clearTimeout(this.pollTimer);
    if (this.page.job === this) this.page.job = null;
  }

  open() {
    const page = this.page;
    page.setState("queued", STATE_TEXT.queued);
    const source = new EventSource(this.accepted.eventsUrl);
    this.source = source;
    // Exposed for tests and the curious: how many times the stream was (re)opened.
    page.output.dataset.connections = "0";
    source.addEventListener("open", () => {
      page.output.dataset.connections = String(Number(page.output.dataset.connections) + 1);
      if (page.status.dataset.state === "reconnecting") page.setState(this.stateBeforeLoss || "running", STATE_TEXT[this.stateBeforeLoss || "running"]);
    });
    for (const name of ["started", "output", "finished", "test", "graded"]) {
      source.addEventListener(name, (event) => this.onEvent(name, event));
    }
    source.addEventListener("done", (event) => {
      let result = null;
      try {
        result = JSON.parse(event.data);
      } catch {
        // Fall back to the result route below.
      }
      if (result) this.finish(result);
      else this.poll();
    });
    source.addEventListener("error", () => {
      if (this.finished || !page.alive) {
        this.close();
        return;
      }
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (an HTTP error, e.g. an expired ticket): read the result instead.
        this.poll();
      } else {
        // It reconnects by itself, sending Last-Event-ID: nothing is lost or repeated.
        if (page.status.dataset.state !== "reconnecting") this.stateBeforeLoss = page.status.dataset.state;
        page.setState("reconnecting", STATE_TEXT.reconnecting);
      }
    });
  }

  onEvent(name, event) {
    const page = this.page;
    if (this.finished) return;
    if (!page.alive) {
      this.close();
      return;
    }
    const seq = Number.parseInt(event.lastEventId, 10);
    if (Number.isFinite(seq)) {
      if (seq <= this.lastSeq) return; // already shown (a resumed stream never repeats, but be sure)
      this.lastSeq = seq;
    }
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      return;
    }
    const attempt = data.attempt || 1;
    if (attempt < this.attempt) return; // a dead runner's leftovers
    if (attempt > this.attempt) {
      if (this.attempt > 0) {
        // The job was restarted on another computer: its output starts again.
        this.streams = { stdout: "", stderr: "" };
        page.output.replaceChildren();
      }
      this.attempt = attempt;
    }
    switch (name) {
      case "started":
        page.setState("running", STATE_TEXT.running);
        break;
      case "output":
        this.append(data.stream, data.text);
        if (page.status.dataset.state === "queued") page.setState("running", STATE_TEXT.running);
        break;
      case "finished":
        if (data.graded) page.setState("grading", STATE_TEXT.grading);
        else page.setState("running", STATE_TEXT.running); // `done` follows at once
        this.finishedEvent = data;
        break;
      case "test":
        page.showTest(data.result);
        break;
      case "graded":
        page.showGrade(data.grade, this.kind);
        break;
    }
  }

  append(stream, text) {
    if (!text) return;
    const page = this.page;
    const name = stream === "stderr" ? "stderr" : "stdout";
    this.streams[name] += text;
    const last = page.output.lastElementChild;
    if (last && last.classList.contains(name)) last.append(text);
    else page.output.append(h("span", { class: name, text }));
    page.outputEmpty.hidden = true;
    page.output.scrollTop = page.output.scrollHeight;
  }

  /** The stream is gone for good: read the result route until the job is over. */
  poll() {
    const page = this.page;
    if (this.finished) return;
    if (this.source) this.source.close();
    page.setState("reconnecting", "Checking on your program…");
    const once = async () => {
      if (this.finished || !page.alive) return;
      try {
        const result = await call(page.api, "GET", this.accepted.resultUrl);
        if (result.status === "completed" || result.status === "failed") {
          this.finish(result);
          return;
        }
      } catch (err) {
        if (err && err.status === 401) {
          this.close();
          page.refused(err);
          return;
        }
      }
      this.pollTimer = setTimeout(once, 1000);
    };
    once();
  }

  /** The final result document: fill in anything the live events did not show, then settle. */
  finish(result) {
    const page = this.page;
    if (this.finished) return;
    this.close();
    if (!page.alive) return;
    // The live output should already be exactly this; if it is not (a lost stream), show the result's.
    if ((result.stdout || "") !== this.streams.stdout || (result.stderr || "") !== this.streams.stderr) {
      page.output.replaceChildren();
      this.streams = { stdout: "", stderr: "" };
      this.append("stdout", result.stdout || "");
      this.append("stderr", result.stderr || "");
      page.output.dataset.reconciled = "true";
    }
    if (result.stdoutTruncated || result.stderrTruncated) {
      page.output.append(h("span", { class: "pp-note", text: "\n(The output was too long, so it was cut.)\n" }));
    }
    for (const test of result.tests || []) {
      const row = page.testList.querySelector(`li[data-index="${test.index}"]`);
      if (!row || row.dataset.state === "waiting") page.showTest(test);
    }
    if (result.grade) page.showGrade(result.grade, this.kind);
    if (this.kind !== "run" && page.output.childElementCount === 0) {
      page.outputEmpty.hidden = false;
      page.outputEmpty.textContent =
        this.kind === "submit" ? "Submitting runs your program on each test: see the results below." : "See the results below.";
    }
    page.results.hidden = this.kind === "run" && !result.grade;
    let text;
    if (result.grade) {
      text = page.resultsAnnouncement(result.grade, this.kind);
    } else if (result.status === "failed") {
      text = result.message || RUN_TEXT.SANDBOX_ERROR;
    } else {
      const verdict = result.verdict || "OK";
      const took = result.durationMs != null ? ` in ${(result.durationMs / 1000).toFixed(1)} s` : "";
      text = `${RUN_TEXT[verdict] || verdict}${verdict === "OK" ? took : ""}.`;
      if (result.message && verdict !== "OK") text += ` ${result.message}`;
    }
    page.setState("done", text);
    page.status.dataset.verdict = (result.grade && result.grade.verdict) || result.verdict || "";
    page.announce(text);
  }
}

// --- pieces -----------------------------------------------------------------------------------------

function renderDiff(diff) {
  const pre = h("pre", { class: "pp-diff", "aria-label": "Differences: minus lines were expected, plus lines are what your program printed" });
  for (const line of diff.split("\n")) {
    if (line.startsWith("---") || line.startsWith("+++")) continue;
    if (line.startsWith("@@")) {
      pre.append(h("span", { class: "pp-diff-hunk", text: "⋯\n" }));
    } else if (line.startsWith("-")) {
      pre.append(h("span", { class: "pp-diff-del" }, h("span", { class: "pp-diff-sign", text: "expected " }), line.slice(1) + "\n"));
    } else if (line.startsWith("+")) {
      pre.append(h("span", { class: "pp-diff-add" }, h("span", { class: "pp-diff-sign", text: "yours    " }), line.slice(1) + "\n"));
    } else {
      pre.append(h("span", { class: "pp-diff-same" }, h("span", { class: "pp-diff-sign", text: "         " }), line.slice(1) + "\n"));
    }
  }
  return h("div", { class: "pp-diff-box" }, h("p", { class: "pp-io-label", text: "What is different" }), pre);
}

function renderFeedback(feedback, heading) {
  const box = h("div", { class: "pp-feedback", role: "note" });
  box.append(h(heading, { class: "pp-feedback-title", text: `💡 ${feedback.title}` }));
  box.append(h("p", { class: "pp-feedback-text", text: feedback.explanation }));
  if (feedback.line) {
    box.append(h("p", { class: "pp-feedback-line", text: `Look at line ${feedback.line} of your program:` }));
    if (feedback.code) box.append(h("pre", { class: "pp-io pp-feedback-code", text: feedback.code }));
  }
  if (feedback.message) box.append(h("p", { class: "pp-feedback-message" }, "Python says: ", h("code", { text: feedback.message })));
  return box;
}

function describeError(err) {
  if (!err) return "Something went wrong. Please try again.";
  if (err.status === 0 || err.name === "TypeError") return "Cannot reach the server. Check your connection and try again.";
  return err.detail || err.message || "Something went wrong. Please try again.";
}

const editorTheme = EditorView.theme({
  "&": {
    fontSize: "16px",
    minHeight: "14rem",
    maxHeight: "70vh",
    backgroundColor: "#ffffff",
    color: "#1b1b1b",
  },
  ".cm-scroller": {
    fontFamily: "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace",
    lineHeight: "1.5",
    minHeight: "14rem",
    overflow: "auto",
  },
  ".cm-content": { padding: "8px 0" },
  "&.cm-focused": { outline: "3px solid #1a5fb4", outlineOffset: "2px" },
  ".cm-gutters": { backgroundColor: "#f3f4f6", color: "#57606a", borderRight: "1px solid #d0d7de" },
  ".cm-activeLine": { backgroundColor: "#f0f6ff" },
  ".cm-activeLineGutter": { backgroundColor: "#dbe9ff" },
});
