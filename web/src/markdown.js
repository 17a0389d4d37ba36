// Problem statements and session introductions are Markdown, written by teachers: rendered with
// marked, then sanitised by DOMPurify before they reach the page (no scripts, no inline styles).
import DOMPurify from "dompurify";
import {Marked} from "marked";

const marked = new Marked({gfm: true, breaks: false, async: false});

/** A <div class="markdown"> holding the sanitised rendering of `text`. */
export function renderMarkdown(text, className = "markdown") {
  const html = DOMPurify.sanitize(marked.parse(text || ""), {
    FORBID_TAGS: ["style", "img", "form", "input", "button", "iframe"],
    FORBID_ATTR: ["style"],
  });
  const div = document.createElement("div");
  div.className = className;
  div.innerHTML = html;  // sanitised above
  for (const a of div.querySelectorAll("a[href]")) a.setAttribute("rel", "noopener noreferrer");
  return div;
}
