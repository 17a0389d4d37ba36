// Sign in and sign up. Sign up asks the age and lets the student pick one of the levels for it.
import {ApiError} from "../api.js";
import {h, field, message} from "../dom.js";

function problemText(err) {
  if (err instanceof ApiError && err.status === 429 && err.retryAfter !== null) {
    return `Too many tries. Please wait ${err.retryAfter} seconds and try again.`;
  }
  return err && err.message ? err.message : String(err);
}

function formStatus() {
  return h("div", {class: "form-status"});
}

function show(statusBox, kind, text) {
  statusBox.replaceChildren(message(kind, text));
}

export function renderSignIn(container, ctx, {onSignedIn}) {
  const email = h("input", {type: "email", name: "email", autocomplete: "username", required: true});
  const password = h("input", {type: "password", name: "password", autocomplete: "current-password", required: true});
  const status = formStatus();
  const button = h("button", {type: "submit", class: "primary"}, "Sign in");
  const form = h(
    "form",
    {class: "card form", novalidate: true},
    field("signin-email", "Email", email),
    field("signin-password", "Password", password),
    button,
    status,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!email.value || !password.value) {
      show(status, "error", "Please type your email and your password.");
      return;
    }
    button.disabled = true;
    show(status, "info", "Signing in…");
    try {
      await ctx.api.login(email.value.trim(), password.value);
      await onSignedIn();
    } catch (err) {
      show(status, "error", err.status === 401 ? "That email or password is not right. Please try again." : problemText(err));
      button.disabled = false;
    }
  });
  container.append(
    h("h1", {}, "Sign in"),
    h("p", {class: "lead"}, "Welcome back! Sign in to keep learning Python."),
    form,
    h("p", {}, "New here? ", h("a", {href: "#/signup"}, "Create an account")),
  );
}

export function renderSignUp(container, ctx, {onSignedIn}) {
  const name = h("input", {type: "text", name: "displayName", autocomplete: "nickname", required: true, maxlength: "80"});
  const email = h("input", {type: "email", name: "email", autocomplete: "email", required: true});
  const password = h("input", {type: "password", name: "password", autocomplete: "new-password", required: true, minlength: "8"});
  const age = h("input", {type: "number", name: "age", min: "5", max: "120", inputmode: "numeric", required: true});
  const levelBox = h("fieldset", {class: "levels", hidden: true}, h("legend", {}, "Your level"));
  const status = formStatus();
  const button = h("button", {type: "submit", class: "primary"}, "Create my account");
  let levels = [];

  async function loadLevels() {
    const years = Number(age.value);
    levelBox.replaceChildren(h("legend", {}, "Your level"));
    levels = [];
    if (!Number.isInteger(years) || years < 0 || years > 150) {
      levelBox.hidden = true;
      return;
    }
    try {
      levels = await ctx.api.get(`/problems/levels/${years}`, {auth: false});
    } catch (err) {
      show(status, "error", problemText(err));
      return;
    }
    levels.forEach((level, i) => {
      const id = `level-${level.slug}`;
      levelBox.append(
        h(
          "div",
          {class: "choice"},
          h("input", {type: "radio", name: "level", id, value: level.slug, checked: i === 0}),
          h("label", {for: id}, h("strong", {}, level.name), " ", h("span", {class: "muted"}, level.description)),
        ),
      );
    });
    levelBox.hidden = levels.length === 0;
    if (levels.length) ctx.announce(`Level for age ${years}: ${levels[0].name}.`);
  }
  age.addEventListener("change", loadLevels);

  const form = h(
    "form",
    {class: "card form", novalidate: true},
    field("signup-name", "Your name", name, "This is the name we show you. It can be a nickname."),
    field("signup-email", "Email", email),
    field("signup-password", "Password", password, "At least 8 letters, numbers or signs."),
    field("signup-age", "How old are you?", age, "We use your age to choose lessons that fit you."),
    levelBox,
    button,
    status,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!levels.length && age.value) await loadLevels();
    const chosen = form.querySelector('input[name="level"]:checked');
    const missing = [
      !name.value.trim() && "your name",
      !email.value.trim() && "your email",
      password.value.length < 8 && "a password of 8 or more characters",
      !chosen && "your age",
    ].filter(Boolean);
    if (missing.length) {
      show(status, "error", `Please fill in ${missing.join(", ")}.`);
      return;
    }
    button.disabled = true;
    show(status, "info", "Creating your account…");
    try {
      await ctx.api.post(
        "/auth/register",
        {displayName: name.value.trim(), email: email.value.trim(), password: password.value, level: chosen.value},
        {auth: false},
      );
      await ctx.api.login(email.value.trim(), password.value);
      await onSignedIn();
    } catch (err) {
      show(status, "error", err.status === 409 ? "There is already an account with this email. Try signing in." : problemText(err));
      button.disabled = false;
    }
  });
  container.append(
    h("h1", {}, "Create your account"),
    h("p", {class: "lead"}, "It takes one minute. Then you can write your first Python program!"),
    form,
    h("p", {}, "Already have an account? ", h("a", {href: "#/signin"}, "Sign in")),
  );
}
