"use strict";
const $ = (id) => document.getElementById(id);
let accessToken = null;  // in memory only
let source = null;

async function api(path, body, auth = true) {
  const headers = {"Content-Type": "application/json"};
  if (auth && accessToken) headers.Authorization = "Bearer " + accessToken;
  const res = await fetch(path, {method: "POST", headers, body: JSON.stringify(body)});
  const text = await res.text();
  const data = text ? JSON.parse(text) : {};
  if (!res.ok) throw new Error(data.detail || data.title || res.statusText);
  return data;
}

async function signIn() {
  const tokens = await api("/auth/login", {email: $("email").value, password: $("password").value}, false);
  accessToken = tokens.accessToken;
  sessionStorage.setItem("refreshToken", tokens.refreshToken);
  const me = await (await fetch("/auth/me", {headers: {Authorization: "Bearer " + accessToken}})).json();
  $("who").textContent = `Signed in as ${me.displayName}`;
  $("auth").classList.add("hidden");
  $("editor").classList.remove("hidden");
}

$("signin").addEventListener("click", () => signIn().catch((e) => { $("auth-status").textContent = e.message; }));
$("signup").addEventListener("click", async () => {
  try {
    await api("/auth/register", {
      email: $("email").value, password: $("password").value,
      displayName: $("name").value || $("email").value.split("@")[0], level: "adults",
    }, false);
    await signIn();
  } catch (e) { $("auth-status").textContent = e.message; }
});

function append(text, stream) {
  const span = document.createElement("span");
  if (stream === "stderr") span.className = "stderr";
  span.textContent = text;  // text, never HTML: output is untrusted
  $("output").appendChild(span);
}

$("run").addEventListener("click", async () => {
  if (source) source.close();
  $("output").textContent = "";
  $("run").disabled = true;
  $("status").textContent = "queued";
  try {
    const job = await api("/execution/submit", {code: $("code").value, stdin: $("stdin").value});
    source = new EventSource(job.eventsUrl);  // carries a ticket for this one job
    let attempt = 0;
    source.addEventListener("started", (e) => {
      const ev = JSON.parse(e.data);
      if (ev.attempt > attempt && attempt > 0) $("output").textContent = "";  // a retry restarts output
      attempt = ev.attempt;
      $("status").textContent = "running";
    });
    source.addEventListener("output", (e) => { const ev = JSON.parse(e.data); append(ev.text, ev.stream); });
    source.addEventListener("done", (e) => {
      const r = JSON.parse(e.data);
      $("status").textContent = `${r.verdict} (exit ${r.exitCode ?? "-"}, ${r.durationMs} ms)`;
      source.close();
      $("run").disabled = false;
    });
  } catch (err) {
    $("status").textContent = "error: " + err.message;
    $("run").disabled = false;
  }
});
