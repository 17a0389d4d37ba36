"""``coderunner``: one command for every process.

- ``coderunner up``: the whole stack on this machine (embedded servers included).
- ``coderunner gateway`` / ``runner`` / ``consume NAME``: one process, configured from the
  environment, as production runs them.
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
    from schemas.results import JobResult
    from schemas.submissions import SubmissionEvent

    _, components = msgspec.json.schema_components(
        [SubmissionEvent, ExecutionEvent, DeadLetter, JobResult], ref_template="#/$defs/{name}"
    )
    doc = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Code Runner events v1",
        "$defs": components,
    }
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(doc)).decode() + "\n")


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
