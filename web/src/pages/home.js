// Home: the sessions (lessons) of the student's level, each with its problems, solved marks and
// a "next problem to try" link.
import {h} from "../dom.js";
import {renderMarkdown} from "../markdown.js";

export async function loadLessons(api, level) {
  const [sessions, progress] = await Promise.all([
    api.get(`/problems/sessions?level=${encodeURIComponent(level)}`),
    api.get(`/progress?level=${encodeURIComponent(level)}`),
  ]);
  const details = await Promise.all(sessions.map((s) => api.get(`/problems/sessions/${encodeURIComponent(s.id)}`)));
  const solved = new Set(
    progress.items.filter((item) => item.solved || item.completed).map((item) => String(item.problemId ?? "")),
  );
  return {sessions: details, solved};
}

export async function renderHome(container, ctx) {
  const {user, api} = ctx;
  const {sessions, solved} = await loadLessons(api, user.level);
  const all = sessions.flatMap((s) => s.problems);
  const next = all.find((p) => !solved.has(String(p.id)));
  const done = all.filter((p) => solved.has(String(p.id))).length;

  container.append(
    h("h1", {}, `Hello, ${user.displayName}!`),
    h("p", {class: "lead"}, `You have solved ${done} of ${all.length} problems.`),
  );
  if (next) {
    container.append(
      h(
        "section",
        {class: "card next", "aria-labelledby": "next-title"},
        h("h2", {id: "next-title"}, "Next problem to try"),
        h("p", {}, h("a", {href: `#/problem/${next.id}`, class: "button primary", id: "next-problem"}, next.title)),
      ),
    );
  } else if (all.length) {
    container.append(h("p", {class: "card next"}, "You solved every problem of your level. Well done!"));
  } else {
    container.append(h("p", {class: "card"}, "There are no lessons for your level yet."));
  }

  for (const session of sessions) {
    const titleId = `session-${session.id}`;
    const count = session.problems.filter((p) => solved.has(String(p.id))).length;
    container.append(
      h(
        "section",
        {class: "card session", "aria-labelledby": titleId},
        h("h2", {id: titleId}, `${session.order}. ${session.title}`),
        h("p", {class: "muted"}, `${count} of ${session.problems.length} solved`),
        session.introduction ? renderMarkdown(session.introduction, "markdown intro") : null,
        h(
          "ol",
          {class: "problems"},
          session.problems.map((p) => {
            const isSolved = solved.has(String(p.id));
            return h(
              "li",
              {class: isSolved ? "solved" : ""},
              h("a", {href: `#/problem/${p.id}`}, p.title),
              isSolved ? h("span", {class: "badge solved-badge"}, h("span", {"aria-hidden": "true"}, "✓ "), "Solved") : null,
            );
          }),
        ),
      ),
    );
  }
}
