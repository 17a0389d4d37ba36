// Tiny DOM helpers. Text is always set as text (never parsed as HTML): the only HTML we insert is
// Markdown that DOMPurify sanitised (markdown.js). No inline styles: the CSP forbids them.

/** h("a", {href: "#/", class: "x"}, "text", child) builds an element. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "text") el.textContent = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** A labelled form field: <div class="field"><label>…</label><input …><p class="help">…</p></div>. */
export function field(id, labelText, input, help) {
  input.id = id;
  const parts = [h("label", {for: id}, labelText), input];
  if (help) {
    const helpId = `${id}-help`;
    input.setAttribute("aria-describedby", helpId);
    parts.push(h("p", {class: "help", id: helpId}, help));
  }
  return h("div", {class: "field"}, parts);
}

/** A polite message under a form (errors get role=alert). */
export function message(kind, text) {
  return h("p", {class: `message ${kind}`, role: kind === "error" ? "alert" : "status"}, text);
}

export function formatDate(value) {
  if (!value) return "";
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? String(value) : d.toLocaleString();
}
