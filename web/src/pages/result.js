// One job's result: verdict, output, and for graded jobs each test's result.
import {h} from "../dom.js";
import {verdictText} from "./progress.js";

export async function renderResult(container, jobId, ctx) {
  const r = await ctx.api.get(`/execution/result/${encodeURIComponent(jobId)}`);
  const verdict = r.grade ? r.grade.verdict : r.verdict;  // a graded job: the grade's verdict
  container.append(
    h("h1", {}, `Result: ${r.status === "completed" || r.status === "failed" ? verdictText(verdict) : "not finished yet"}`),
    h(
      "dl",
      {class: "card facts"},
      h("dt", {}, "Status"), h("dd", {}, r.status),
      h("dt", {}, "Verdict"), h("dd", {}, verdict || "—"),
      r.grade ? [h("dt", {}, "Score"), h("dd", {}, `${r.grade.score}% (${r.grade.passed} of ${r.grade.total} tests)`)] : null,
      h("dt", {}, "Time"), h("dd", {}, r.durationMs != null ? `${r.durationMs} ms` : "—"),
      h("dt", {}, "Exit code"), h("dd", {}, r.exitCode != null ? String(r.exitCode) : "—"),
    ),
  );
  if (r.message) container.append(h("p", {class: "message info"}, r.message));
  if (r.tests && r.tests.length) {
    container.append(
      h(
        "section",
        {class: "card", "aria-labelledby": "tests-title"},
        h("h2", {id: "tests-title"}, "Tests"),
        h("ul", {class: "tests"}, r.tests.map((t) => h("li", {}, `Test ${t.index + 1}${t.public ? "" : " (hidden)"}: ${verdictText(t.verdict)}`))),
      ),
    );
  }
  container.append(
    h("h2", {}, "Output"),
    h("pre", {class: "output", tabindex: "0", "aria-label": "Output"}, r.stdout || "(no output)"),
  );
  if (r.stderr) container.append(h("h2", {}, "Errors"), h("pre", {class: "output stderr", tabindex: "0", "aria-label": "Errors"}, r.stderr));
  container.append(h("p", {}, h("a", {href: "#/progress"}, "Back to my progress")));
}
