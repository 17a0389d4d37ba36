"""``coderunner``: one command for every process.

- ``coderunner up``: the whole stack on this machine (embedded servers included).
- ``coderunner gateway`` / ``runner`` / ``consume NAME``: one process, configured from the
  environment, as production runs them.
- ``coderunner events JOB_ID``: a job's stored history, for incident analysis.
- ``coderunner user-role EMAIL ROLE``: make an account a teacher or admin.
- ``coderunner schema``: the JSON Schema of every event (the public contract).
- ``coderunner env-example``: every setting with its default.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deploy.config import SettingsError


def _schema() -> None:
    import msgspec

    from schemas.deadletter import DeadLetter
    from schemas.executions import ExecutionEvent
    from schemas.ops import RunnerStats
    from schemas.results import JobResult
    from schemas.submissions import SubmissionEvent

    _, components = msgspec.json.schema_components(
        [SubmissionEvent, ExecutionEvent, DeadLetter, JobResult, RunnerStats], ref_template="#/$defs/{name}"
    )
    doc = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Code Runner events v1",
        "$defs": components,
    }
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(doc)).decode() + "\n")


def _events(job_id: str) -> None:
    """Print one job's stored history: its submission and every execution event, in order."""
    import asyncio
    import os

    import msgspec

    from deploy import bus

    async def dump() -> None:
        url = os.environ.get("NATS_URL")
        if not url:
            raise SystemExit("coderunner events: NATS_URL is required")
        nc, js = await bus.connect(url, "coderunner-events")
        try:
            submission = await bus.submission_of(js, job_id)
            if submission is None:
                raise SystemExit(f"coderunner events: no submission for job {job_id!r}")
            print(msgspec.json.encode(submission).decode())
            async for seq, event in bus.job_events(js, job_id):
                print(f"{seq}\t{msgspec.json.encode(event).decode()}")
        finally:
            await bus.close(nc)

    asyncio.run(dump())


def _set_role(email: str, role: str) -> None:
    """Operator tool: give an account the teacher or admin role (there is no sign-up for those)."""
    import os

    from pymongo import MongoClient

    uri = os.environ.get("MONGODB_URI")
    if not uri:
        raise SystemExit("coderunner user-role: MONGODB_URI is required")
    client: MongoClient = MongoClient(uri, serverSelectionTimeoutMS=5000)
    with client:
        result = client["coderunner"]["users"].update_one({"email": email.strip().lower()}, {"$set": {"role": role}})
    if result.matched_count != 1:
        raise SystemExit(f"coderunner user-role: no account {email!r}")
    print(f"{email}: {role}")


def _env_example() -> None:
    from consumers.settings import ConsumerSettings
    from deploy.config import env_example
    from gateway.settings import GatewaySettings
    from runner.settings import RunnerSettings

    sys.stdout.write(env_example(GatewaySettings, RunnerSettings, ConsumerSettings))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="coderunner", description="Code Runner")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the whole stack locally")
    up.add_argument("--data-dir", type=Path, default=Path(".data"))
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000)
    sub.add_parser("gateway", help="run the HTTP gateway")
    sub.add_parser("runner", help="run a runner")
    consume = sub.add_parser("consume", help="run a durable consumer")
    consume.add_argument("name", choices=["caching", "progress", "grading"])
    events = sub.add_parser("events", help="print a job's stored events (for incident analysis)")
    events.add_argument("job_id")
    role = sub.add_parser("user-role", help="set an account's role (student, teacher, admin)")
    role.add_argument("email")
    role.add_argument("role", choices=["student", "teacher", "admin"])
    sub.add_parser("schema", help="print the events' JSON Schema")
    sub.add_parser("env-example", help="print every setting with its default")
    args = parser.parse_args(argv)

    try:
        if args.command == "up":
            from deploy.supervisor import up as run_up

            raise SystemExit(run_up(args.data_dir.resolve(), args.host, args.port))
        if args.command == "gateway":
            from gateway.app import main as gateway_main

            gateway_main()
        elif args.command == "runner":
            from runner.main import main as runner_main

            runner_main()
        elif args.command == "consume":
            from consumers.main import main as consumer_main

            consumer_main(args.name)
        elif args.command == "events":
            _events(args.job_id)
        elif args.command == "user-role":
            _set_role(args.email, args.role)
        elif args.command == "schema":
            _schema()
        elif args.command == "env-example":
            _env_example()
    except SettingsError as exc:
        for problem in exc.problems:
            print(f"coderunner {args.command}: {problem}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
