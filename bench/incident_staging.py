"""Stages the incident walked through in docs/operations.md on a throwaway `coderunner up`, and
prints the operator commands' real output: a runner SIGKILLed mid-run (its job comes back as
attempt 2) and a graded submission that misses the expected format.

    .venv/bin/python bench/incident_staging.py
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
CODERUNNER = str(ROOT / ".venv" / "bin" / "coderunner")
PORT = 8765
SLOW = "import time\nfor i in range(3):\n    print('step', i, flush=True)\n    time.sleep(1)\nprint('done')\n"
WRONG_HELLO = "name = input()\nprint('Hello ' + name)\n"


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="incident-"))
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "REDIS_URL", "MONGODB_URI", "JWT_SECRET")}
    log_path = work / "up.log"
    with log_path.open("wb") as log:
        # A short AckWait, so that the lost job comes back within seconds.
        up = subprocess.Popen(
            [CODERUNNER, "up", "--port", str(PORT)],
            cwd=work,
            env={**env, "RUNNER_ACK_WAIT_SECONDS": "5"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def operator(*args: str) -> None:
        print("$ coderunner " + " ".join(args))
        done = subprocess.run([CODERUNNER, *args], cwd=work, env=env, capture_output=True, text=True, timeout=120)
        print(done.stdout + done.stderr)

    try:
        deadline = time.time() + 90
        while time.time() < deadline and "Code Runner is up" not in log_path.read_text():
            time.sleep(0.5)
        with httpx.Client(base_url=f"http://127.0.0.1:{PORT}", timeout=30) as c:
            account = {"email": "ada@example.org", "password": "correct horse battery", "displayName": "Ada"}
            c.post("/auth/register", json={**account, "level": "kids"})
            login = c.post("/auth/login", json={"email": account["email"], "password": account["password"]})
            c.headers["Authorization"] = f"Bearer {login.json()['accessToken']}"
            user_id = c.get("/auth/me").json()["id"]
            job = c.post("/execution/submit", json={"code": SLOW}).json()
            time.sleep(1.6)  # two lines printed
            pids = dict(re.findall(r"started (\S+) \(pid (\d+)\)", log_path.read_text()))
            os.kill(int(pids["runner"]), signal.SIGKILL)
            for _ in range(180):
                result = c.get(job["resultUrl"]).json()
                if result["status"] in ("completed", "failed"):
                    break
                time.sleep(0.5)
            print("result:", json.dumps(result)[:300])
            graded = c.post("/execution/submit/grade", json={"code": WRONG_HELLO, "problemId": 101}).json()
            time.sleep(4)
        operator("replay", "--user", user_id, "--since", "10m", "--subject", "coderunner.v1.executions.*.finished")
        operator("replay", f"--job={job['jobId']}")
        operator("replay", "--dead-letters")
        operator("replay", f"--job={graded['jobId']}")
        print("\n".join(line for line in log_path.read_text().splitlines() if "runner" in line))
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(30)


if __name__ == "__main__":
    main()
