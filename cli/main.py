"""``coderunner``: one command for every process.

- ``coderunner up``: the whole stack on this machine (embedded servers included).
- ``coderunner gateway`` / ``runner`` / ``consume NAME``: one process, configured from the
  environment, as production runs them.
- ``coderunner events JOB_ID``: a job's stored history, for incident analysis.
- ``coderunner replay``: stored events as a timeline (by job, user, problem, subject, time,
  sequence), dead letters; ``coderunner redrive``: dead letters published again.
- ``coderunner user-role EMAIL ROLE``: make an account a teacher or admin (signs it out).
- ``coderunner seed``: load the curriculum files into MongoDB (idempotent).
- ``coderunner rebuild progress``: recompute the progress projection from the streams, swap it in.
- ``coderunner backup DIR`` / ``restore DIR``: the streams and the MongoDB database saved to a folder,
  and put back with their sequences (docs/backup.md).
- ``coderunner schema [--write]``: the JSON Schema of every event (the public contract); ``--write``
  writes every generated file of the contract (``schemas/json/``, ``schemas/asyncapi.yaml``).
- ``coderunner asyncapi``: the AsyncAPI 3.0 document of every channel.
- ``coderunner env-example``: every setting with its default.
- ``coderunner flag list`` / ``set NAME on|off|PERCENT`` / ``history``: the feature flags (docs/flags.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nats.errors import NoServersError

from bus import streams
from config.loader import SettingsError


def _schema(write: bool) -> None:
    from cli import contract

    if write:
        for path in contract.write():
            print(path.relative_to(contract.ROOT))
    else:
        sys.stdout.write(contract.events_schema())


def _asyncapi() -> None:
    from cli import contract

    sys.stdout.write(contract.asyncapi_yaml())


def _events(job_id: str) -> None:
    """Print one job's stored history: its submission and every execution event, in order."""
    import asyncio

    import msgspec

    from bus import client, history

    async def dump() -> None:
        from local.stackenv import stack_setting

        url = stack_setting("NATS_URL")
        if not url:
            raise SystemExit("coderunner events: NATS_URL is required")
        nc, js = await client.connect(url, "coderunner-events", one_shot=True)
        try:
            submission = await history.submission_of(js, job_id)
            if submission is None:
                raise SystemExit(f"coderunner events: no submission for job {job_id!r}")
            print(msgspec.json.encode(submission).decode())
            async for seq, event in history.job_events(js, job_id):
                print(f"{seq}\t{msgspec.json.encode(event).decode()}")
        finally:
            await client.close(nc)

    asyncio.run(dump())


def _seed(path: Path | None, if_empty: bool) -> None:
    """Load the curriculum files; each changed problem gets a new revision and a change event."""
    import asyncio

    from beanie import init_beanie
    from pymongo import AsyncMongoClient

    from bus import client
    from curriculum import files
    from curriculum.changes import seed
    from curriculum.store import DATABASE, DOCUMENTS, CurriculumStore
    from local.stackenv import stack_setting

    nats_url, uri = stack_setting("NATS_URL"), stack_setting("MONGODB_URI")
    if not nats_url or not uri:
        raise SystemExit("coderunner seed: NATS_URL and MONGODB_URI are required (or a running `coderunner up`)")
    try:
        curriculum = files.load(path or files.CONTENT)
    except files.CurriculumError as exc:
        raise SystemExit(f"coderunner seed: {exc}") from None

    async def run() -> None:
        mongo: AsyncMongoClient = AsyncMongoClient(uri, serverSelectionTimeoutMS=5000)
        nc, js = await client.connect(nats_url, "coderunner-seed", one_shot=True)
        try:
            await init_beanie(database=mongo.get_default_database(DATABASE), document_models=DOCUMENTS)
            store = CurriculumStore()
            if if_empty and not await store.is_empty():
                print("curriculum: already seeded (--if-empty)")
                return
            await streams.provision(js, _limits())
            print(f"curriculum: {await seed(js, store, curriculum)}")
        finally:
            await client.close(nc)
            await mongo.close()

    asyncio.run(run())


def _rebuild(what: str) -> None:
    """Recompute a projection from the streams and swap it in (progress.rebuild)."""
    import asyncio

    from pymongo import AsyncMongoClient

    from bus import client
    from local.stackenv import stack_setting
    from progress.rebuild import rebuild

    nats_url, uri = stack_setting("NATS_URL"), stack_setting("MONGODB_URI")
    if not nats_url or not uri:
        raise SystemExit(f"coderunner rebuild {what}: NATS_URL and MONGODB_URI are required (or a running `up`)")

    async def run() -> None:
        mongo: AsyncMongoClient = AsyncMongoClient(uri, serverSelectionTimeoutMS=5000)
        nc, js = await client.connect(nats_url, "coderunner-rebuild", one_shot=True)
        try:
            print(await rebuild(js, mongo.get_default_database("coderunner"), say=print))
        finally:
            await client.close(nc)
            await mongo.close()

    asyncio.run(run())


def _limits() -> streams.BusLimits:
    from config.loader import load
    from consumers.settings import ConsumerSettings

    return load(ConsumerSettings).bus_limits()


def _set_role(email: str, role: str) -> None:
    """Operator tool: give an account the teacher or admin role (there is no sign-up for those).

    A role change signs the user out everywhere: every login (token family) is revoked, and its
    access tokens and SSE tickets, and any token still claiming another role, are refused through
    the gateways' deny list in Redis until they would have expired anyway.
    """
    import unicodedata
    from datetime import UTC, datetime

    import redis
    from pymongo import MongoClient

    from gateway.tokens import MAX_DENY_SECONDS, ROLES, family_deny_key, role_deny_key
    from local.stackenv import stack_setting

    uri, redis_url = stack_setting("MONGODB_URI"), stack_setting("REDIS_URL")
    if not uri or not redis_url:
        raise SystemExit("coderunner user-role: MONGODB_URI and REDIS_URL are required (or a running `coderunner up`)")
    deny = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        deny.ping()  # before changing anything: the change must be able to sign the user out
    except redis.RedisError as exc:
        raise SystemExit(f"coderunner user-role: Redis (REDIS_URL) is unreachable: {exc}") from None
    client: MongoClient = MongoClient(uri, serverSelectionTimeoutMS=5000)
    with client, deny:
        db = client.get_default_database("coderunner")
        user = db["users"].find_one({"email": unicodedata.normalize("NFC", email.strip().lower())}, {"_id": 1})
        if user is None:
            raise SystemExit(f"coderunner user-role: no account {email!r}")
        user_id = str(user["_id"])
        db["users"].update_one({"_id": user["_id"]}, {"$set": {"role": role}})
        now = datetime.now(UTC)
        families = {
            doc["family_id"]
            for doc in db["refresh_tokens"].find({"user_id": user_id}, {"family_id": 1, "revoked": 1, "expires_at": 1})
            if not doc.get("revoked") and doc["expires_at"].replace(tzinfo=UTC) > now
        }
        # As the gateway revokes a family: its record first (refreshes re-read it), then its tokens.
        for family_id in families:
            db["token_families"].update_one(
                {"family_id": family_id},
                {"$set": {"revoked": True}, "$setOnInsert": {"user_id": user_id, "created_at": now}},
                upsert=True,
            )
        db["token_families"].update_many({"user_id": user_id}, {"$set": {"revoked": True}})
        db["refresh_tokens"].update_many({"user_id": user_id}, {"$set": {"revoked": True}})
        with deny.pipeline(transaction=False) as pipe:
            for family_id in families:
                pipe.set(family_deny_key(family_id), 1, ex=MAX_DENY_SECONDS)
            for other in ROLES:
                if other != role:
                    pipe.set(role_deny_key(user_id, other), 1, ex=MAX_DENY_SECONDS)
            pipe.delete(role_deny_key(user_id, role))
            pipe.execute()
    print(f"{email}: {role} (signed out everywhere)")


def _env_example() -> None:
    from config.loader import env_example
    from consumers.settings import ConsumerSettings
    from gateway.settings import GatewaySettings
    from runner.settings import RunnerSettings

    sys.stdout.write(env_example(GatewaySettings, RunnerSettings, ConsumerSettings))


def _gateway_address(host: str | None, port: int | None) -> tuple[str, int]:
    """`up`'s gateway address: the flags, else GATEWAY_HOST / GATEWAY_PORT, else the defaults."""
    import os

    raw_port = os.environ.get("GATEWAY_PORT") or "8000"
    if port is None:
        if not raw_port.isdigit() or not 1 <= int(raw_port) <= 65535:
            raise SettingsError([f"GATEWAY_PORT={raw_port!r} is invalid: expected a port number (1-65535)"])
        port = int(raw_port)
    return host or os.environ.get("GATEWAY_HOST") or "127.0.0.1", port


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="coderunner", description="Code Runner")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the whole stack locally")
    up.add_argument("--data-dir", type=Path, default=Path(".data"))
    up.add_argument("--host", default=None, help="gateway address (default: GATEWAY_HOST, else 127.0.0.1)")
    up.add_argument("--port", type=int, default=None, help="gateway port (default: GATEWAY_PORT, else 8000)")
    up.add_argument("--cluster", action="store_true", help="three NATS servers as one JetStream cluster, streams at R3")
    sub.add_parser("gateway", help="run the HTTP gateway")
    sub.add_parser("runner", help="run a runner")
    consume = sub.add_parser("consume", help="run a durable consumer")
    consume.add_argument("name", choices=list(streams.CONSUMERS))
    events = sub.add_parser("events", help="print a job's stored events (for incident analysis)")
    events.add_argument("job_id", help="the job id (after --: an id may start with -)")
    from cli import replay

    replay.add_replay_arguments(sub.add_parser("replay", help="print stored events as a timeline, or dead letters"))
    replay.add_redrive_arguments(sub.add_parser("redrive", help="publish dead letters again to their subject"))
    from cli import backup

    backup.add_backup_arguments(sub.add_parser("backup", help="save the streams and the database to a folder"))
    backup.add_restore_arguments(sub.add_parser("restore", help="restore a backup into an empty stack"))
    role = sub.add_parser("user-role", help="set an account's role (student, teacher, admin)")
    role.add_argument("email")
    role.add_argument("role", choices=["student", "teacher", "admin"])
    rebuild_cmd = sub.add_parser("rebuild", help="recompute a projection from the streams and swap it in")
    rebuild_cmd.add_argument("projection", choices=["progress"])
    seed_cmd = sub.add_parser("seed", help="load the curriculum files into MongoDB (idempotent)")
    seed_cmd.add_argument("--path", type=Path, default=None, help="the content folder (default: the repository's)")
    seed_cmd.add_argument("--if-empty", action="store_true", help="only when no problem is stored yet")
    schema_cmd = sub.add_parser("schema", help="print the events' JSON Schema")
    schema_cmd.add_argument("--write", action="store_true", help="write schemas/json/ and schemas/asyncapi.yaml")
    sub.add_parser("asyncapi", help="print the events' AsyncAPI 3.0 document")
    sub.add_parser("env-example", help="print every setting with its default")
    from cli import flag

    flag.add_flag_arguments(sub.add_parser("flag", help="list, set and audit the feature flags"))
    args = parser.parse_args(argv)

    try:
        if args.command == "up":
            from local.supervisor import up as run_up

            host, port = _gateway_address(args.host, args.port)
            raise SystemExit(run_up(args.data_dir.resolve(), host, port, nats_nodes=3 if args.cluster else 1))
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
        elif args.command == "replay":
            replay.main_replay(args)
        elif args.command == "redrive":
            replay.main_redrive(args)
        elif args.command == "backup":
            backup.main_backup(args)
        elif args.command == "restore":
            backup.main_restore(args)
        elif args.command == "user-role":
            _set_role(args.email, args.role)
        elif args.command == "rebuild":
            _rebuild(args.projection)
        elif args.command == "seed":
            _seed(args.path, args.if_empty)
        elif args.command == "schema":
            _schema(args.write)
        elif args.command == "asyncapi":
            _asyncapi()
        elif args.command == "env-example":
            _env_example()
        elif args.command == "flag":
            flag.main_flag(args)
    except SettingsError as exc:
        for problem in exc.problems:
            print(f"coderunner {args.command}: {problem}", file=sys.stderr)
        raise SystemExit(1) from None
    except NoServersError:
        # A command's one-shot connection gave up (the services wait for the bus instead).
        print(f"coderunner {args.command}: NATS is not reachable at NATS_URL", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
