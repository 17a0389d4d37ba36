"""``coderunner flag``: list the feature flags, set one, print who changed what.

- ``coderunner flag list``: every flag, its value (Redis) and what it does;
- ``coderunner flag set NAME on|off|PERCENT [--reason TEXT] [--by NAME]``: store the value and
  publish its ``flag.changed`` audit event (both, or neither: flags/store.py: set_flag);
- ``coderunner flag history [NAME]``: the audit trail from the FLAGS stream.

A bad name or value is refused before anything is contacted, in one line naming it (exit 2); an
unreachable Redis or NATS in one line too (exit 1).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from nats.js import JetStreamContext
from redis.exceptions import RedisError

from bus import client
from flags.declared import FLAGS, Flag, FlagError, flag_named, parse, show
from flags.store import history, read_store, set_flag


def add_flag_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="flag_command", required=True)
    sub.add_parser("list", help="every flag, its value and what it does")
    setter = sub.add_parser("set", help="set a flag: on, off, or a percentage (a share's)")
    setter.add_argument("name", help=f"one of {', '.join(f.name for f in FLAGS)}")
    setter.add_argument("value", help="on, off, or a percentage from 0 to 100 (shares only)")
    setter.add_argument("--reason", default="", help="why, for the audit trail")
    setter.add_argument("--by", default=None, help="who (default: your login name)")
    shown = sub.add_parser("history", help="the audit trail: every change, oldest first")
    shown.add_argument("name", nargs="?", help="one flag's changes only")


def main_flag(args: argparse.Namespace) -> None:
    command = f"coderunner flag {args.flag_command}"
    try:
        # Validate before contacting anything: a typo changes nothing, and says so in one line.
        flag = flag_named(args.name) if getattr(args, "name", None) else None
        value = parse(flag, args.value) if flag is not None and args.flag_command == "set" else None
    except FlagError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.flag_command == "list":
        asyncio.run(_list(command))
    elif args.flag_command == "set":
        assert flag is not None and value is not None
        by = args.by or getpass.getuser()
        asyncio.run(_set(command, flag, value, by=by, reason=args.reason))
    else:
        asyncio.run(_history(command, flag))


def _setting(command: str, name: str) -> str:
    from local.stackenv import stack_setting

    url = stack_setting(name)
    if not url:
        raise SystemExit(f"{command}: {name} is required (or a running `coderunner up`)")
    return url


@asynccontextmanager
async def _redis(command: str) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis.from_url(_setting(command, "REDIS_URL"), socket_timeout=5, socket_connect_timeout=5)
    try:
        try:
            await redis.ping()
        except (RedisError, OSError) as exc:
            raise SystemExit(f"{command}: Redis (REDIS_URL) is unreachable: {exc}") from None
        yield redis
    finally:
        await redis.aclose()


@asynccontextmanager
async def _nats(command: str) -> AsyncIterator[JetStreamContext]:
    nc, js = await client.connect(_setting(command, "NATS_URL"), "coderunner-flag", one_shot=True)
    try:
        yield js
    finally:
        await client.close(nc)


async def _list(command: str) -> None:
    async with _redis(command) as redis:
        values, stored = await read_store(redis)
    width = max(len(f.name) for f in FLAGS)
    for flag in FLAGS:
        value = show(flag, values[flag.name])
        where = "" if flag.name in stored else " (default)"
        share = f", per {flag.per}" if flag.per else ""
        print(f"{flag.name:<{width}}  {value + where:<14}  {flag.kind}{share}, checked by the {flag.checked_by}")
        print(f"{'':<{width}}  {flag.description}")


async def _set(command: str, flag: Flag, value: int, *, by: str, reason: str) -> None:
    async with _redis(command) as redis, _nats(command) as js:
        try:
            event, seq = await set_flag(redis, js, flag, value, by=by, host=socket.gethostname(), reason=reason)
        except RedisError as exc:
            raise SystemExit(f"{command}: Redis failed: {exc}") from None
        except Exception as exc:
            # (No FLAGS stream yet: no process of a version with flags has started.)
            raise SystemExit(
                f"{command}: the audit event could not be published ({type(exc).__name__}: {exc}); "
                f"{flag.name} keeps its old value, run the command again"
            ) from None
    print(f"{flag.name}: {event.old} -> {event.new} (by {event.changed_by} on {event.host}; FLAGS seq {seq})")


async def _history(command: str, flag: Flag | None) -> None:
    async with _nats(command) as js:
        changes = await history(js, flag)
    for seq, event in changes:
        why = f"  {event.reason}" if event.reason else ""
        print(
            f"{seq}\t{event.changed_at.isoformat(timespec='seconds')}\t{event.flag}\t{event.old} -> {event.new}"
            f"\t{event.changed_by}@{event.host}{why}"
        )
