"""A student, as Locust simulates one, against the real stack.

Each simulated student signs up and signs in, then, with think times between steps: browses the
problems of their level, presses Run on a problem (its public tests) or on scratch code several
times, submits a solution (wrong or right), reads their progress, and now and then runs a
hostile-but-legal program (a 2 s busy loop, a print far over the output cap). Every job's event
stream is read to ``done``.

Besides Locust's own per-endpoint figures, two timings are reported as request type ``JOB``:
POST → ``done`` and the queue wait (POST → ``started``). A refusal that tells the client when to
come back (429 or 503 with ``Retry-After``) is a correct answer, counted apart, not a failure.

Every accepted job is accounted for in a ledger written to ``LOAD_JOURNAL`` at the end: whether
its stream delivered exactly one ``done`` and, for a job whose stream did not (the run stopped
while it ran, a stream error), its final state fetched afterwards. A job that never reaches a
terminal state is lost. ``load/run.py`` reads the ledger and fails the run on any 5xx, lost job or
repeated ``done``.

Run it through ``load/run.py`` (``make load SCENARIO=…``), which starts the stack and Locust.
"""

from __future__ import annotations

import functools
import json
import os
import random
import secrets
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import requests
from locust import HttpUser, LoadTestShape, between, events, task
from locust.env import Environment

from load.scenarios import SCENARIOS, Scenario

TERMINAL = ("completed", "failed")
LEVELS = ("kids", "teens", "adults")
PASSWORD = "load test password"
SCRATCH = (
    "for i in range(5):\n    print(i * i)\n",
    "name = 'Ada'\nprint(f'Hello, {name}!')\n",
    "print(sum(range(1000)))\n",
    "words = 'the quick brown fox'.split()\nprint(sorted(words, key=len))\n",
)
HOSTILE = {
    "busy 2 s": "import time\nend = time.time() + 2\nwhile time.time() < end:\n    pass\nprint('done')\n",
    "big print": "for i in range(50_000):\n    print('line', i, 'x' * 40)\n",
}


def scenario() -> Scenario:
    return SCENARIOS[os.environ.get("LOAD_SCENARIO", "smoke")]


@functools.cache
def curriculum() -> dict[int, dict[str, Any]]:
    """Each problem's starter code, solution and wrong solutions (from the repository's files)."""
    from curriculum.files import load

    return {
        p.id: {
            "starter": p.starter_code,
            "solution": p.solution,
            "wrong": [w.code for w in p.wrong_solutions],
        }
        for p in load().problems
    }


def _seconds(retry_after: str) -> float:
    try:
        return max(1.0, float(retry_after))
    except ValueError:  # an HTTP date: not what the gateway sends, but legal
        return 5.0


@dataclass
class Job:
    job_id: str
    kind: str  # run | problem | grade | hostile
    accepted_at: float
    started_after: float | None = None
    done_after: float | None = None
    dones: int = 0
    status: str = "queued"  # the last state known: from `done`, or fetched at the end
    verdict: str | None = None
    stream_error: str | None = None


class Ledger:
    """Every accepted job, and every HTTP answer by endpoint and status (one per Locust process)."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.owners: dict[str, Student] = {}  # job id -> the student who may read it (checks at the end)
        self.answers: Counter[str] = Counter()  # "POST /execution/submit 202"
        self.refused: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()  # no HTTP answer at all: what the client saw

    def write(self, path: str, checked: dict[str, Any]) -> None:
        data = {
            "scenario": scenario().name,
            "jobs": [asdict(j) for j in self.jobs.values()],
            "answers": dict(self.answers),
            "refused": dict(self.refused),
            "errors": dict(self.errors),
            "end_check": checked,
        }
        with open(path, "w") as f:
            json.dump(data, f)


LEDGER = Ledger()


class Student(HttpUser):
    wait_time = between(5, 15)

    def on_start(self) -> None:
        self.level = random.choice(LEVELS)
        self.token = ""
        self.refresh_token = ""
        email = f"load-{secrets.token_hex(8)}@example.org"
        account = {"email": email, "password": PASSWORD, "displayName": "Load", "level": self.level}
        self.email = email
        self.retry_after = 0.0
        # A refused registration or sign-in (429/503: a burst of students at once) is retried when
        # Retry-After says, as the browser app does; a student without an account would do nothing.
        for _ in range(10):
            if self.call("POST", "/auth/register", json=account, expect=(201,)) is not None or not self.retry_after:
                break
            time.sleep(min(self.retry_after, 30))
        for _ in range(10):
            if self.sign_in() or not self.retry_after:
                break
            time.sleep(min(self.retry_after, 30))
        page = self.call("GET", f"/problems/?level={self.level}&pageSize=100", name="GET /problems/")
        ids = [p["id"] for p in (page or {}).get("items", [])]
        self.problems = [i for i in ids if i in curriculum()] or list(curriculum())

    def sign_in(self) -> bool:
        pair = self.call("POST", "/auth/login", json={"email": self.email, "password": PASSWORD}, auth=False)
        if pair:
            self.token, self.refresh_token = pair["accessToken"], pair["refreshToken"]
        return bool(pair)

    def refresh(self) -> bool:
        pair = self.call("POST", "/auth/refresh", json={"refreshToken": self.refresh_token}, auth=False)
        if pair:
            self.token, self.refresh_token = pair["accessToken"], pair["refreshToken"]
        return bool(pair)

    # --- one HTTP call, classified -----------------------------------------------------------------

    def call(
        self,
        method: str,
        path: str,
        *,
        name: str | None = None,
        json: Any = None,
        expect: tuple[int, ...] = (200,),
        auth: bool = True,
        retried: bool = False,
    ) -> Any:
        """The decoded body of an expected answer; None for a refusal or a failure (both recorded)."""
        name = name or f"{method} {path}"
        headers = {"Authorization": f"Bearer {self.token}"} if auth and self.token else {}
        self.retry_after = 0.0
        with self.client.request(method, path, name=name, json=json, headers=headers, catch_response=True) as res:
            LEDGER.answers[f"{name} {res.status_code}"] += 1
            if res.status_code == 0:
                LEDGER.errors[f"{name}: {str(res.error)[:160]}"] += 1
            if res.status_code in expect:
                res.success()
                return res.json() if res.content else {}
            if res.status_code in (429, 503) and res.headers.get("Retry-After"):
                res.success()  # backpressure, said properly: a correct answer
                LEDGER.refused[f"{name} {res.status_code}"] += 1
                self.retry_after = _seconds(res.headers["Retry-After"])
                return None
            if res.status_code == 401 and auth and not retried:
                res.success()  # the access token expired (15 min): rotate and try again
                if self.refresh():
                    return self.call(method, path, name=name, json=json, expect=expect, retried=True)
                return None
            res.failure(f"{res.status_code}: {res.text[:200]}")
            return None

    # --- jobs --------------------------------------------------------------------------------------

    def job(self, kind: str, path: str, body: dict[str, Any]) -> None:
        began = time.perf_counter()
        accepted = self.call("POST", path, json=body, expect=(202,))
        if accepted is None:
            return
        job = LEDGER.jobs[accepted["jobId"]] = Job(accepted["jobId"], kind, time.time())
        LEDGER.owners[job.job_id] = self
        try:
            self.read_stream(accepted["eventsUrl"], job, began)
        except Exception as exc:  # a broken stream: the job is checked at the end, not lost here
            job.stream_error = f"{type(exc).__name__}: {exc}"[:200]

    def read_stream(self, url: str, job: Job, began: float) -> None:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "text/event-stream"}
        with self.client.get(
            url, name="GET events (SSE)", headers=headers, stream=True, catch_response=True, timeout=(10, 60)
        ) as res:
            LEDGER.answers[f"GET events (SSE) {res.status_code}"] += 1
            if res.status_code != 200:
                if res.status_code in (429, 503) and res.headers.get("Retry-After"):
                    res.success()
                    LEDGER.refused[f"GET events (SSE) {res.status_code}"] += 1
                    job.stream_error = f"refused {res.status_code}"
                else:
                    res.failure(f"{res.status_code}: {res.text[:200]}")
                    job.stream_error = f"status {res.status_code}"
                return
            res.success()
            event, data = "", []
            # The server closes the stream after `done`: read to the end, so a second `done` shows.
            for line in res.iter_lines(decode_unicode=True):
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line == "":
                    self.on_event(job, event, "\n".join(data), began)
                    event, data = "", []

    def on_event(self, job: Job, event: str, data: str, began: float) -> None:
        elapsed = time.perf_counter() - began
        if event == "started" and job.started_after is None:
            job.started_after = elapsed
            timing(f"{job.kind}: queue wait (POST -> started)", elapsed)
        elif event == "done":
            job.dones += 1
            if job.dones == 1:
                job.done_after = elapsed
                timing(f"{job.kind}: POST -> done", elapsed)
            result = json.loads(data)
            job.status, job.verdict = result.get("status", "?"), result.get("verdict")

    def pick(self) -> int:
        return random.choice(self.problems)

    # --- what a student does -----------------------------------------------------------------------

    @task(5)
    def run_on_a_problem(self) -> None:
        problem = curriculum()[pid := self.pick()]
        code = random.choices(
            [problem["starter"], *(problem["wrong"] or [problem["starter"]]), problem["solution"]],
            k=1,
        )[0]
        self.job("problem", "/execution/submit", {"code": code, "problemId": pid})

    @task(2)
    def run_scratch_code(self) -> None:
        self.job("run", "/execution/submit", {"code": random.choice(SCRATCH)})

    @task(2)
    def submit_a_solution(self) -> None:
        problem = curriculum()[pid := self.pick()]
        code = problem["solution"] if random.random() < 0.5 or not problem["wrong"] else random.choice(problem["wrong"])
        self.job("grade", "/execution/submit/grade", {"code": code, "problemId": pid})

    @task(2)
    def browse(self) -> None:
        self.call("GET", f"/problems/?level={self.level}", name="GET /problems/")
        self.call("GET", f"/problems/{self.pick()}", name="GET /problems/{id}")

    @task(1)
    def read_progress(self) -> None:
        self.call("GET", "/progress/summary")

    @task(1)
    def run_something_hostile(self) -> None:
        self.job("hostile", "/execution/submit", {"code": random.choice(list(HOSTILE.values()))})


def timing(name: str, seconds: float) -> None:
    events.request.fire(
        request_type="JOB",
        name=name,
        response_time=seconds * 1000,
        response_length=0,
        exception=None,
        context={},
    )


class ScenarioShape(LoadTestShape):
    """Users over time as the scenario says (Locust uses a shape class found in the locustfile)."""

    def tick(self) -> tuple[int, float] | None:
        return scenario().at(self.get_run_time())


def check_unfinished(host: str, within: float = 90.0) -> dict[str, Any]:
    """Fetch the state of every job whose stream did not deliver `done` (a run stopped mid-job, a
    broken stream), until each is terminal or ``within`` seconds have passed."""
    open_jobs = [j for j in LEDGER.jobs.values() if j.dones == 0]
    deadline = time.monotonic() + within
    with requests.Session() as http:
        while open_jobs and time.monotonic() < deadline:
            still = []
            for job in open_jobs:
                owner = LEDGER.owners[job.job_id]
                try:
                    url = f"{host}/execution/result/{job.job_id}"
                    res = http.get(url, headers={"Authorization": f"Bearer {owner.token}"}, timeout=10)
                    if res.status_code == 401:  # a long run: the access token expired
                        pair = http.post(f"{host}/auth/refresh", json={"refreshToken": owner.refresh_token}, timeout=10)
                        if pair.status_code == 200:
                            owner.token, owner.refresh_token = pair.json()["accessToken"], pair.json()["refreshToken"]
                    elif res.status_code == 200:
                        job.status = res.json().get("status", job.status)
                        job.verdict = res.json().get("verdict")
                except requests.RequestException:
                    pass
                if job.status not in TERMINAL:
                    still.append(job)
            open_jobs = still
            if open_jobs:
                time.sleep(1)
    return {
        "checked_without_done": sum(1 for j in LEDGER.jobs.values() if j.dones == 0),
        "never_terminal": len(open_jobs),
    }


@events.quitting.add_listener
def write_ledger(environment: Environment, **_: Any) -> None:
    path = os.environ.get("LOAD_JOURNAL")
    if path and environment.host:
        LEDGER.write(path, check_unfinished(environment.host.rstrip("/")))
