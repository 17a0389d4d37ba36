// Teachers and admins: every problem, and a form to edit a problem's title, statement and tests.
import {h, field, message} from "../dom.js";

const LEVEL_ORDER = ["kids", "teens", "adults"];

function isStaff(user) {
  return user && (user.role === "teacher" || user.role === "admin");
}

function notAllowed(container) {
  container.append(h("h1", {}, "Teachers only"), h("p", {}, "This page is for teachers. ", h("a", {href: "#/home"}, "Go to my lessons")));
}

export async function renderTeacherList(container, ctx) {
  if (!isStaff(ctx.user)) return notAllowed(container);
  const items = [];
  for (let page = 1; page <= 50; page += 1) {
    const res = await ctx.api.get(`/problems?page=${page}&pageSize=100`);
    items.push(...res.items);
    if (items.length >= res.total || res.items.length === 0) break;
  }
  items.sort((a, b) => LEVEL_ORDER.indexOf(a.level) - LEVEL_ORDER.indexOf(b.level) || a.session.localeCompare(b.session) || a.order - b.order);
  container.append(
    h("h1", {}, "Problems"),
    h("p", {class: "lead"}, `${items.length} problems. Choose one to edit it.`),
    h(
      "div",
      {class: "table-wrap card"},
      h(
        "table",
        {id: "teacher-problems"},
        h("caption", {class: "visually-hidden"}, "Every problem, by level and lesson"),
        h("thead", {}, h("tr", {}, ["Id", "Level", "Lesson", "Title", ""].map((t) => h("th", {scope: "col"}, t)))),
        h(
          "tbody",
          {},
          items.map((p) =>
            h(
              "tr",
              {},
              h("td", {}, String(p.id)),
              h("td", {}, p.level),
              h("td", {}, p.session),
              h("td", {}, h("a", {href: `#/problem/${p.id}`}, p.title)),
              h("td", {}, h("a", {href: `#/teacher/${p.id}`, "aria-label": `Edit ${p.title}`}, "Edit")),
            ),
          ),
        ),
      ),
    ),
  );
}

function testFieldset(test, index) {
  const prefix = `test-${index}`;
  const input = (name, value, attrs = {}) => h("textarea", {name, rows: "3", spellcheck: "false", ...attrs}, value ?? "");
  const publicBox = h("input", {type: "checkbox", id: `${prefix}-public`, name: "public", checked: !!test.public});
  return h(
    "fieldset",
    {class: "test", "data-index": String(index)},
    h("legend", {}, `Test ${index + 1}`),
    field(`${prefix}-id`, "Test id", h("input", {type: "text", name: "id", value: test.id, required: true})),
    h("div", {class: "choice"}, publicBox, h("label", {for: `${prefix}-public`}, "Students can see this test")),
    field(`${prefix}-stdin`, "Input (stdin)", input("stdin", test.stdin)),
    field(`${prefix}-expected`, "Expected (JSON)", input("expected", JSON.stringify(test.expected ?? null)), "For example \"8\\n\" for the output 8."),
    h("button", {type: "button", class: "remove-test"}, `Remove test ${index + 1}`),
  );
}

export async function renderTeacherEdit(container, problemId, ctx) {
  if (!isStaff(ctx.user)) return notAllowed(container);
  // The whole stored problem (solutions and hidden tests included): saving sends it all back.
  const problem = await ctx.api.get(`/problems/${problemId}/edit`);
  const tests = problem.tests;
  let revision = problem.revision;
  const originals = new Map(tests.map((t) => [t.id, t]));
  const title = h("input", {type: "text", name: "title", value: problem.title, required: true, maxlength: "120"});
  const statement = h("textarea", {name: "statement", rows: "10"}, problem.statement);
  const testsBox = h("div", {class: "tests-box"}, tests.map(testFieldset));
  const status = h("div", {class: "form-status"});
  const addButton = h("button", {type: "button"}, "Add a test");
  addButton.addEventListener("click", () => {
    const n = testsBox.querySelectorAll("fieldset.test").length;
    const fs = testFieldset({id: `t${n + 1}`, public: true, stdin: "", expected: ""}, n);
    testsBox.append(fs);
    fs.querySelector("input").focus();
  });
  testsBox.addEventListener("click", (event) => {
    if (!event.target.classList.contains("remove-test")) return;
    event.target.closest("fieldset").remove();
    ctx.announce("Test removed.");
    addButton.focus();
  });

  const form = h(
    "form",
    {class: "card form", novalidate: true},
    field("edit-title", "Title", title),
    field("edit-statement", "Statement (Markdown)", statement),
    h("h2", {}, "Tests"),
    testsBox,
    addButton,
    h("p", {class: "help"}, "Saving keeps everything else of the problem (its solution, its other settings)."),
    h("button", {type: "submit", class: "primary"}, "Save"),
    status,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let bodyTests;
    try {
      bodyTests = [...testsBox.querySelectorAll("fieldset.test")].map((fs) => {
        const id = fs.querySelector('[name="id"]').value.trim();
        const original = originals.get(id) || {};
        const expectedText = fs.querySelector('[name="expected"]').value;
        let expected;
        try {
          expected = expectedText.trim() === "" ? null : JSON.parse(expectedText);
        } catch {
          throw new Error(`Test ${id}: "Expected" is not valid JSON (text needs quotes, like "8\\n").`);
        }
        return {...original, id, public: fs.querySelector('[name="public"]').checked, stdin: fs.querySelector('[name="stdin"]').value, expected};
      });
    } catch (err) {
      status.replaceChildren(message("error", err.message));
      return;
    }
    const {id: _id, revision: _revision, ...stored} = problem;
    const body = {...stored, title: title.value.trim(), statement: statement.value, tests: bodyTests};
    status.replaceChildren(message("info", "Saving…"));
    try {
      const saved = await ctx.api.put(`/problems/${problemId}`, body, {headers: {"If-Match": `"${revision}"`}});
      revision = saved.revision;
      status.replaceChildren(message("success", `Saved (revision ${saved.revision}).`));
      ctx.announce("Saved.");
    } catch (err) {
      const text = err.status === 409 || err.status === 412 ? "Someone else changed this problem. Reload the page to see their changes." : err.message;
      status.replaceChildren(message("error", text));
    }
  });
  container.append(
    h("h1", {}, `Edit: ${problem.title}`),
    h("p", {}, h("a", {href: "#/teacher"}, "Back to all problems")),
    form,
  );
}
