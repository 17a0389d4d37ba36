// My progress: solved counts per level and session, the streak, and recent submissions.
import {h, formatDate} from "../dom.js";

const VERDICTS = {
  OK: "Ran fine",
  ACCEPTED: "Solved",
  WRONG_ANSWER: "Not yet right",
  RUNTIME_ERROR: "Error",
  TIME_LIMIT_EXCEEDED: "Too slow",
  MEMORY_LIMIT_EXCEEDED: "Too much memory",
};

export function verdictText(verdict) {
  if (!verdict) return "—";
  return VERDICTS[verdict] || verdict.replaceAll("_", " ").toLowerCase();
}

function bar(id, label, solved, total) {
  return h(
    "div",
    {class: "bar"},
    h("label", {for: id}, label, h("span", {class: "count"}, ` ${solved} of ${total}`)),
    h("progress", {id, max: String(Math.max(total, 1)), value: String(solved)}, `${solved} of ${total}`),
  );
}

export async function renderProgress(container, ctx) {
  const {api, user} = ctx;
  const [summary, sessions, history] = await Promise.all([
    api.get("/progress/summary"),
    api.get(`/problems/sessions?level=${encodeURIComponent(user.level)}`).catch(() => []),
    api.get("/execution/history?pageSize=10"),
  ]);
  const titles = new Map(sessions.map((s) => [s.id, `${s.order}. ${s.title}`]));
  const streak = summary.streakDays || 0;

  container.append(
    h("h1", {}, "My progress"),
    h(
      "section",
      {class: "stats", "aria-label": "Totals"},
      h("p", {class: "stat card"}, h("strong", {}, String(summary.solved)), " problems solved"),
      h("p", {class: "stat card"}, h("strong", {}, String(summary.attempts)), " tries"),
      h("p", {class: "stat card"}, h("strong", {}, String(streak)), streak === 1 ? " day in a row" : " days in a row"),
    ),
  );

  const LEVELS = ["kids", "teens", "adults"];
  const levels = summary.levels.filter((l) => l.total > 0).sort((a, b) => LEVELS.indexOf(a.id) - LEVELS.indexOf(b.id));
  container.append(
    h(
      "section",
      {class: "card", "aria-labelledby": "levels-title"},
      h("h2", {id: "levels-title"}, "Levels"),
      levels.length ? levels.map((l) => bar(`level-${l.id}`, l.id, l.solved, l.total)) : h("p", {}, "Nothing yet."),
    ),
  );
  const order = new Map(sessions.map((s, i) => [s.id, i]));
  const rank = (id) => (order.has(id) ? order.get(id) : Number.MAX_SAFE_INTEGER);
  const mine = summary.sessions
    .filter((s) => !s.level || s.level === user.level || s.solved > 0)
    .sort((a, b) => rank(a.id) - rank(b.id) || a.id.localeCompare(b.id));
  container.append(
    h(
      "section",
      {class: "card", "aria-labelledby": "sessions-title"},
      h("h2", {id: "sessions-title"}, "Lessons"),
      mine.length ? mine.map((s) => bar(`session-${s.id}`, titles.get(s.id) || s.id, s.solved, s.total)) : h("p", {}, "Nothing yet."),
    ),
  );

  const rows = history.items.map((job) =>
    h(
      "tr",
      {},
      h("td", {}, formatDate(job.finishedAt || job.submittedAt)),
      h("td", {}, job.problemId ? h("a", {href: `#/problem/${job.problemId}`}, `Problem ${job.problemId}`) : "Free run"),
      h("td", {}, job.mode === "grade" ? "Check" : "Run"),
      h("td", {}, verdictText(job.verdict)),
      h("td", {}, h("a", {href: `#/result/${job.jobId}`}, "See result")),
    ),
  );
  container.append(
    h(
      "section",
      {class: "card", "aria-labelledby": "history-title"},
      h("h2", {id: "history-title"}, "Recent programs"),
      rows.length
        ? h(
            "div",
            {class: "table-wrap"},
            h(
              "table",
              {id: "history"},
              h("caption", {class: "visually-hidden"}, "Your most recent programs, newest first"),
              h("thead", {}, h("tr", {}, ["When", "Problem", "Kind", "Result", "Details"].map((t) => h("th", {scope: "col"}, t)))),
              h("tbody", {}, rows),
            ),
          )
        : h("p", {}, "You have not run a program yet."),
    ),
  );
}
