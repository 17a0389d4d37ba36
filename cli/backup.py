"""``coderunner backup DIR`` and ``coderunner restore DIR``: the JetStream streams and the MongoDB
database, saved to a folder and put back with their stream sequences (docs/backup.md).

- Streams: the server's own snapshot and restore API, as ``nats stream backup`` / ``nats stream
  restore`` use it (nats-io/jsm.go ``snapshots.go``; the server side is nats-server
  ``server/jetstream_api.go``: ``jsStreamSnapshotRequest``, ``streamSnapshot``,
  ``jsStreamRestoreRequest``, ``processStreamRestore``). A snapshot is the stream's own storage
  (s2-compressed tar, consumers and their positions included), so every message keeps its
  sequence: the projections record the sequences they applied, so republishing would not do.

  Snapshot: subscribe to an inbox, then request ``$JS.API.STREAM.SNAPSHOT.<stream>`` with
  ``{"deliver_subject": inbox, "no_consumers": false, "chunk_size": …}``; the answer carries the
  stream's config and state. The server then sends the data to the inbox in chunks; a chunk with a
  reply subject is acknowledged with an empty message to that subject (the acks are the flow
  control: the server keeps a window of unacknowledged chunks and gives up after 5 s without one).
  An empty message ends it; a status header other than 204 (``408 No Flow Response``,
  ``500 <error>``) means it failed.

  Restore: request ``$JS.API.STREAM.RESTORE.<stream>`` with ``{"config": …, "state": …}``, which
  answers with a ``deliver_subject``; send the data there in chunks, each as a request (an empty
  reply is the ack, a JSON reply an error), then an empty request, whose reply is the created
  stream's info (or the error). The stream must not exist: ``--replace`` deletes it first.

- MongoDB: every collection of the application's database, as BSON documents one after another
  (``<name>.bson``, as mongodump writes them) and its indexes in canonical Extended JSON
  (``<name>.metadata.json``), with plain find / insert_many / create_index only, so the embedded
  MongoDB-wire server and real MongoDB both serve it.

- ``manifest.json``, written last: when, by which version and commit, each stream with its message
  count, sequences and consumers, each collection with its document count, and each file's size
  and SHA-256. A folder without one is an unfinished backup. ``restore`` checks the files against
  it first, and the counts after restoring.

The backup takes MongoDB first, then the streams in the order bus/streams.py declares them
(submissions before executions): what the database recorded is then always in the streams, and the
projections never hold a sequence the restored streams have not reached. The durables that apply
events to a sequence-guarded projection (``in_order`` in ``bus.streams.DURABLES``) lose their
restored position on restore, so their owners re-create them and replay the streams into the
restored projection: what it had already is skipped by its guards, what arrived between the
database dump and the snapshot is applied.

Redis is not backed up: it holds caches, quotas and the deny list of revoked sign-ins
(docs/backup.md says what a restore means for each).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import nats
from bson import json_util
from bson.codec_options import CodecOptions
from bson.json_util import CANONICAL_JSON_OPTIONS
from bson.raw_bson import RawBSONDocument
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import NotFoundError
from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import CollectionInvalid, ConfigurationError, PyMongoError

from bus import client, streams

FORMAT = 1
MANIFEST = "manifest.json"
NATS_DIR = "nats"
MONGO_DIR = "mongodb"
# The names the nats CLI gives a stream's backup folder's files.
STREAM_META = "backup.json"
STREAM_DATA = "stream.tar.s2"
API = "$JS.API"
SNAPSHOT_CHUNK = 128 * 1024  # what the server sends per message (its default)
RESTORE_CHUNK = 64 * 1024  # what we send per request (as the nats CLI)
CHUNK_WAIT = 30.0  # seconds without a chunk (or an ack of one) before giving up
RESTORE_WAIT = 3600.0  # the server rebuilds the stream from the data after the last chunk
INSERT_BATCH = 500
DEFAULT_DATABASE = "coderunner"  # the database when MONGODB_URI names none (as every process)
ROOT = Path(__file__).resolve().parent.parent

Say = Callable[[str], None]
RAW = CodecOptions(document_class=RawBSONDocument)


class BackupError(Exception):
    """What went wrong, in one line for the operator."""


def declared_streams() -> list[str]:
    """The streams bus/streams.py declares, in its order (names and order do not depend on the
    limits, which are placeholders here)."""
    return [c.name for c in streams.stream_configs(streams.BusLimits(1, 1, 1, 1)) if c.name]


def projection_durables(stream: str) -> list[str]:
    """The durables on ``stream`` that apply its events to a projection guarded by sequence."""
    return [d.name for d in streams.DURABLES if d.stream == stream and d.in_order]


# --- Connections -------------------------------------------------------------------------------


async def _quiet(_: Exception) -> None:
    pass


async def connect_nats(url: str) -> NATS:
    """Connect, trying each server of ``url`` twice: an unreachable bus is an error, not a wait."""
    try:
        return await nats.connect(
            client.servers(url),  # a cluster's nodes, comma-separated
            name="coderunner-backup",
            connect_timeout=5,
            max_reconnect_attempts=1,
            reconnect_time_wait=0.5,
            error_cb=_quiet,
        )
    except (OSError, NatsError, TimeoutError) as exc:
        raise BackupError(f"NATS (NATS_URL) is unreachable: {exc or type(exc).__name__}") from None


def connect_mongo(uri: str) -> tuple[MongoClient[dict[str, Any]], Database[dict[str, Any]]]:
    try:
        mongo: MongoClient[dict[str, Any]] = MongoClient(uri, serverSelectionTimeoutMS=5000)
        db = mongo.get_default_database(DEFAULT_DATABASE)
    except (ConfigurationError, ValueError) as exc:
        raise BackupError(f"MONGODB_URI is invalid: {exc}") from None
    try:
        mongo.admin.command("ping")
    except PyMongoError as exc:
        mongo.close()
        raise BackupError(f"MongoDB (MONGODB_URI) is unreachable: {_first(exc)}") from None
    return mongo, db


def _first(exc: BaseException) -> str:
    """An exception's message without pymongo's topology description."""
    return str(exc).split(", Timeout:")[0].splitlines()[0] if str(exc) else type(exc).__name__


async def api(nc: NATS, subject: str, body: dict[str, Any], wait: float = 30.0) -> dict[str, Any]:
    """One JetStream API request; its error as a BackupError."""
    try:
        msg = await nc.request(subject, json.dumps(body).encode(), timeout=wait)
    except NoRespondersError:
        raise BackupError(f"no JetStream answers {subject} (is JetStream enabled on NATS_URL?)") from None
    except NatsTimeoutError:
        raise BackupError(f"JetStream did not answer {subject} within {wait:.0f} s") from None
    reply: dict[str, Any] = json.loads(msg.data or b"{}")
    _raise_error(subject, reply)
    return reply


def _raise_error(what: str, reply: dict[str, Any]) -> None:
    error = reply.get("error")
    if error:
        raise BackupError(f"{what}: {error.get('description', error)} (JetStream error {error.get('err_code', '?')})")


async def stream_state(nc: NATS, name: str) -> dict[str, Any] | None:
    """The stream's state (messages, first_seq, last_seq, consumer_count), None if it does not exist."""
    try:
        info = await nc.jetstream(timeout=10).stream_info(name)
    except NotFoundError:
        return None
    state = info.state
    return {
        "messages": state.messages,
        "first_seq": state.first_seq,
        "last_seq": state.last_seq,
        "consumer_count": state.consumer_count,
    }


# --- Files -------------------------------------------------------------------------------------


class Digest:
    """Bytes written through it, counted and hashed."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.size = 0

    def add(self, data: bytes | memoryview) -> None:
        self.hash.update(data)
        self.size += len(data)

    def entry(self, path: Path, root: Path) -> dict[str, Any]:
        return {"file": path.relative_to(root).as_posix(), "bytes": self.size, "sha256": self.hash.hexdigest()}


def file_digest(path: Path) -> Digest:
    digest = Digest()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.add(block)
    return digest


def _json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")


def _safe_name(name: str) -> str:
    if not name or "/" in name or "\\" in name or name.startswith(".") or "\0" in name:
        raise BackupError(f"cannot store a collection named {name!r} as a file")
    return name


# --- JetStream: snapshot and restore -----------------------------------------------------------


async def snapshot_stream(nc: NATS, name: str, folder: Path, root: Path) -> dict[str, Any]:
    """Save one stream (its consumers included) to ``folder`` as the nats CLI lays it out."""
    os.makedirs(folder)
    data_path = folder / STREAM_DATA
    consumers = sorted([c.name for c in await nc.jetstream(timeout=10).consumers_info(name) if c.name])
    inbox = nc.new_inbox()
    # Subscribed before the request: the server sends the first chunks right after its answer.
    sub = await nc.subscribe(inbox, pending_msgs_limit=-1, pending_bytes_limit=-1)
    digest = Digest()
    try:
        request = {"deliver_subject": inbox, "no_consumers": False, "chunk_size": SNAPSHOT_CHUNK}
        reply = await api(nc, f"{API}.STREAM.SNAPSHOT.{name}", request)
        with data_path.open("wb") as out:
            while True:
                try:
                    msg = await sub.next_msg(timeout=CHUNK_WAIT)
                except NatsTimeoutError:
                    raise BackupError(f"snapshot of {name}: no data from the server for {CHUNK_WAIT:.0f} s") from None
                headers = msg.headers or {}
                status = headers.get("Status")
                if status and status != "204":
                    raise BackupError(f"snapshot of {name} failed: {status} {headers.get('Description', '')}".strip())
                if not msg.data:
                    break  # the end (a 204, or nothing when the whole snapshot fitted in one chunk)
                out.write(msg.data)
                digest.add(msg.data)
                if msg.reply:
                    await nc.publish(msg.reply, b"")  # the ack that frees a slot of the server's window
    finally:
        await sub.unsubscribe()
    # The nats CLI's backup.json: what the restore request sends back.
    _json(folder / STREAM_META, {"config": reply["config"], "state": reply["state"]})
    state = reply["state"]
    return {
        "name": name,
        "messages": state.get("messages", 0),
        "first_seq": state.get("first_seq", 0),
        "last_seq": state.get("last_seq", 0),
        "replicas": reply["config"].get("num_replicas", 1),
        "consumers": consumers,
        "meta": file_digest(folder / STREAM_META).entry(folder / STREAM_META, root),
        "data": digest.entry(data_path, root),
    }


async def restore_stream(nc: NATS, name: str, folder: Path, replicas: int | None = None) -> dict[str, Any]:
    """Create stream ``name`` from its snapshot; returns its state as the server reports it.

    The config sent is the stream's new identity (the server's ``RestoreStream``): ``replicas``
    changes its number of copies, e.g. a three-node cluster's backup restored on one server.
    """
    meta = json.loads((folder / STREAM_META).read_text())
    config = meta.get("config", {})
    if config.get("name") != name:
        raise BackupError(f"{folder / STREAM_META} is not the backup of stream {name}")
    if replicas is not None:
        config = {**config, "num_replicas": replicas}
    reply = await api(nc, f"{API}.STREAM.RESTORE.{name}", {"config": config, "state": meta["state"]})
    deliver = reply["deliver_subject"]
    try:
        with (folder / STREAM_DATA).open("rb") as data:
            while chunk := data.read(RESTORE_CHUNK):
                ack = await nc.request(deliver, chunk, timeout=CHUNK_WAIT)
                if ack.data:
                    _raise_error(f"restore of {name}", json.loads(ack.data))
        done = await nc.request(deliver, b"", timeout=RESTORE_WAIT)
    except NatsTimeoutError:
        raise BackupError(f"restore of {name}: the server stopped answering") from None
    created: dict[str, Any] = json.loads(done.data or b"{}")
    _raise_error(f"restore of {name}", created)
    state: dict[str, Any] = created.get("state") or {}
    return state


# --- MongoDB: dump and load --------------------------------------------------------------------


def _collections(db: Database[dict[str, Any]]) -> list[str]:
    names = [
        info["name"]
        for info in db.list_collections()
        if not info["name"].startswith("system.") and info.get("type", "collection") == "collection"
    ]
    return sorted(names)


def _raw(db: Database[dict[str, Any]], name: str) -> Collection[RawBSONDocument]:
    """The collection read and written as BSON bytes, never decoded."""
    return cast("Collection[RawBSONDocument]", db.get_collection(name, codec_options=RAW))


def dump_database(db: Database[dict[str, Any]], folder: Path, root: Path) -> list[dict[str, Any]]:
    folder.mkdir(parents=True)
    entries = []
    for name in _collections(db):
        path = folder / f"{_safe_name(name)}.bson"
        digest, count = Digest(), 0
        with path.open("wb") as out:
            for doc in _raw(db, name).find({}):
                out.write(doc.raw)  # the document's own bytes: nothing decoded, nothing changed
                digest.add(doc.raw)
                count += 1
        indexes = [dict(index) for index in db[name].list_indexes()]
        meta_path = folder / f"{name}.metadata.json"
        meta = {"collectionName": name, "type": "collection", "indexes": indexes}
        meta_path.write_text(json_util.dumps(meta, json_options=CANONICAL_JSON_OPTIONS, indent=2) + "\n")
        entries.append(
            {
                "name": name,
                "documents": count,
                "indexes": sorted(str(index["name"]) for index in indexes),
                "data": digest.entry(path, root),
                "meta": file_digest(meta_path).entry(meta_path, root),
            }
        )
    return entries


def read_bson(path: Path) -> Iterator[RawBSONDocument]:
    """The documents of a ``.bson`` file: each is its int32 little-endian length, then the rest."""
    with path.open("rb") as f:
        while head := f.read(4):
            size = int.from_bytes(head, "little", signed=True)
            rest = f.read(size - 4) if size > 4 else b""
            if len(head) < 4 or size <= 4 or len(rest) != size - 4:
                raise BackupError(f"{path} is truncated or not BSON")
            yield RawBSONDocument(head + rest, RAW)


def load_collection(db: Database[dict[str, Any]], folder: Path, entry: dict[str, Any]) -> None:
    """Create the collection afresh with the backup's documents, then its indexes."""
    name = entry["name"]
    db.drop_collection(name)
    with contextlib.suppress(CollectionInvalid):
        db.create_collection(name)  # explicitly: a collection the backup has empty exists after it too
    collection = _raw(db, name)
    batch: list[RawBSONDocument] = []
    for doc in read_bson(folder / f"{_safe_name(name)}.bson"):
        batch.append(doc)
        if len(batch) >= INSERT_BATCH:
            collection.insert_many(batch, ordered=True)
            batch = []
    if batch:
        collection.insert_many(batch, ordered=True)
    meta = json_util.loads((folder / f"{name}.metadata.json").read_text())
    for index in meta.get("indexes", []):
        if index.get("name") == "_id_":
            continue
        keys = list(dict(index["key"]).items())
        options = {k: v for k, v in index.items() if k not in ("key", "v", "ns", "background")}
        db[name].create_index(keys, **options)


# --- Backup ------------------------------------------------------------------------------------


def _app_version() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        app = version("coderunner")
    except PackageNotFoundError:
        app = "unknown"
    commit, dirty = None, None
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        dirty = bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        pass  # not a git checkout (the image): the version is what there is
    return {"version": app, "commit": commit, "uncommitted_changes": dirty}


def _check_fresh(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise BackupError(f"{directory} is not a folder")
    if directory.exists() and any(directory.iterdir()):
        raise BackupError(f"{directory} is not empty: give a new or empty folder for each backup")


def _server_version(nc: NATS) -> str:
    version = nc.connected_server_version
    try:
        return f"{version.major}.{version.minor}.{version.patch}"
    except ValueError:  # not semantic versioning: the manifest says so rather than failing the backup
        return "unknown"


@contextlib.asynccontextmanager
async def _connected(nats_url: str, mongo_uri: str) -> AsyncIterator[tuple[NATS, Any]]:
    """NATS and the application's database, both reachable (else BackupError), closed after."""
    mongo, db = connect_mongo(mongo_uri)
    try:
        nc = await connect_nats(nats_url)
    except BackupError:
        mongo.close()
        raise
    try:
        yield nc, db
    finally:
        await nc.close()
        mongo.close()


async def backup(directory: Path, nats_url: str, mongo_uri: str, say: Say = print) -> dict[str, Any]:
    _check_fresh(directory)
    async with _connected(nats_url, mongo_uri) as (nc, db):
        try:
            os.makedirs(directory, exist_ok=True)  # once both servers answer
            started = datetime.now(UTC)
            # MongoDB first, then the streams (module docstring): the database never records a
            # sequence the streams have not reached.
            collections = await asyncio.to_thread(dump_database, db, directory / MONGO_DIR, directory)
            stream_entries, absent = [], []
            for name in declared_streams():
                if await stream_state(nc, name) is None:
                    absent.append(name)
                    continue
                stream_entries.append(await snapshot_stream(nc, name, directory / NATS_DIR / name, directory))
            manifest = {
                "format": FORMAT,
                "created": started.isoformat(timespec="seconds"),
                "finished": datetime.now(UTC).isoformat(timespec="seconds"),
                "app": _app_version(),
                "nats": {"server_version": _server_version(nc), "streams": stream_entries},
                "not_provisioned": absent,
                "mongodb": {"database": db.name, "collections": collections},
            }
            partial = directory / (MANIFEST + ".partial")
            _json(partial, manifest)
            os.replace(partial, directory / MANIFEST)  # last: a folder with a manifest is a whole backup
        except (BackupError, PyMongoError, NatsError, OSError) as exc:
            what = exc if isinstance(exc, BackupError) else _first(exc)
            raise BackupError(f"{what} ({directory} is unfinished, with no {MANIFEST}: delete it)") from None
    say(f"backup in {directory} ({MANIFEST}), {manifest['created']}:")
    for s in stream_entries:
        say(
            f"  stream {s['name']:<12} messages {s['messages']:>7}, seq {s['first_seq']}..{s['last_seq']}, "
            f"consumers {len(s['consumers'])}, bytes {s['data']['bytes']}"
        )
    for name in absent:
        say(f"  stream {name:<12} not on the server (never provisioned): nothing to save")
    for c in collections:
        say(f"  collection {c['name']:<20} documents {c['documents']:>7}, indexes {len(c['indexes'])}")
    return manifest


# --- Restore -----------------------------------------------------------------------------------


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest, after checking every file it names against its size and SHA-256."""
    if not directory.is_dir():
        raise BackupError(f"{directory} does not exist or is not a folder")
    path = directory / MANIFEST
    if not path.is_file():
        hint = " (an unfinished backup)" if (directory / NATS_DIR).exists() or (directory / MONGO_DIR).exists() else ""
        raise BackupError(f"{directory} holds no {MANIFEST}: not a backup{hint}")
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
        if manifest.get("format") != FORMAT:
            raise BackupError(f"{path}: format {manifest.get('format')!r}, this version reads format {FORMAT}")
        files = [e[k] for e in manifest["nats"]["streams"] for k in ("meta", "data")]
        files += [e[k] for e in manifest["mongodb"]["collections"] for k in ("meta", "data")]
    except KeyError as exc:
        raise BackupError(f"{path} is not a backup manifest: it has no {exc.args[0]!r}") from None
    except (ValueError, TypeError) as exc:
        raise BackupError(f"{path} is not a backup manifest: {exc}") from None
    for f in files:
        target = directory / f["file"]
        if not target.is_file():
            raise BackupError(f"the manifest does not match {directory}: {f['file']} is missing")
        digest = file_digest(target)
        if digest.size != f["bytes"] or digest.hash.hexdigest() != f["sha256"]:
            raise BackupError(
                f"the manifest does not match {directory}: {f['file']} has {digest.size} bytes "
                f"(sha256 {digest.hash.hexdigest()[:12]}), the manifest says {f['bytes']} ({f['sha256'][:12]})"
            )
    return manifest


@dataclass
class Check:
    what: str
    ok: bool
    line: str


async def restore(
    directory: Path, nats_url: str, mongo_uri: str, *, replace: bool, replicas: int | None = None, say: Say = print
) -> bool:
    """Restore the backup; True when every count matches the manifest."""
    manifest = read_manifest(directory)
    app = manifest["app"]
    say(
        f"backup of {manifest['created']} by coderunner {app['version']}"
        + (f" (commit {app['commit'][:12]})" if app.get("commit") else "")
    )
    async with _connected(nats_url, mongo_uri) as (nc, db):
        js = nc.jetstream(timeout=10)
        wanted = manifest["nats"]["streams"]
        collections = manifest["mongodb"]["collections"]
        # Nothing is changed before every check passed: a refused restore leaves the stack as it was.
        existing = {s["name"]: await stream_state(nc, s["name"]) for s in wanted}
        busy_streams = [f"{n} (messages: {st['messages']})" for n, st in existing.items() if st and st["messages"]]
        present = _collections(db)
        busy_collections = [f"{n} (documents: {c})" for n in present if (c := db[n].count_documents({}))]
        if (busy_streams or busy_collections) and not replace:
            found = "; ".join(
                part
                for part in (
                    busy_streams and "streams " + ", ".join(busy_streams),
                    busy_collections and f"collections of {db.name}: " + ", ".join(busy_collections),
                )
                if part
            )
            raise BackupError(f"refusing to overwrite what is there ({found}): pass --replace to replace it")

        restored: dict[str, dict[str, Any]] = {}
        try:
            # MongoDB, then the streams (the order of the backup).
            if replace:
                for name in present:
                    db.drop_collection(name)  # the database becomes the backup's, nothing more
            for entry in collections:
                await asyncio.to_thread(load_collection, db, directory / MONGO_DIR, entry)
            for entry in wanted:
                name = entry["name"]
                if existing[name] is not None:
                    await js.delete_stream(name)  # empty, or --replace
                restored[name] = await restore_stream(nc, name, directory / NATS_DIR / name, replicas)
                for durable in projection_durables(name):
                    if durable in entry["consumers"]:
                        await js.delete_consumer(name, durable)
                        say(
                            f"  durable {durable} on {name}: position dropped, its owner replays {name} into "
                            "the restored projection (what it has is skipped by sequence)"
                        )
        except (BackupError, PyMongoError, NatsError, OSError) as exc:
            what = exc if isinstance(exc, BackupError) else _first(exc)
            raise BackupError(f"{what} (partly restored: fix the cause, then restore with --replace)") from None

        checks: list[Check] = []
        for entry in wanted:
            checks.append(_check_stream(entry, restored[entry["name"]], await stream_state(nc, entry["name"])))
        for entry in collections:
            checks.append(_check_collection(db, entry))

    for check in checks:
        say(check.line)
    for name in declared_streams():
        if name not in {e["name"] for e in wanted}:
            say(f"  stream {name:<12} not in the backup: its owner creates it empty")
    bad = [c.what for c in checks if not c.ok]
    if bad:
        say(f"restore NOT verified: {', '.join(bad)} differ from the manifest")
        return False
    say(f"restore verified: {len(wanted)} streams and {len(collections)} collections of database {db.name}")
    return True


def _check_stream(entry: dict[str, Any], created: dict[str, Any], now: dict[str, Any] | None) -> Check:
    name, state = entry["name"], now or created
    messages, last_seq = state.get("messages", 0), state.get("last_seq", 0)
    dropped = len([d for d in projection_durables(name) if d in entry["consumers"]])
    consumers = state.get("consumer_count", 0)
    ok = last_seq == entry["last_seq"] and consumers == len(entry["consumers"]) - dropped
    note = ""
    if messages != entry["messages"]:
        # Messages older than the stream's max age expire as it is restored from an old backup;
        # the sequences stay, and the database keeps the results.
        expired = last_seq == entry["last_seq"] and state.get("first_seq", 0) > entry["first_seq"]
        ok = ok and expired
        note = " (the oldest expired: older than the stream's max age)" if expired else ""
    line = (
        f"  stream {name:<12} messages {messages:>7} (backup {entry['messages']}), last seq {last_seq} "
        f"(backup {entry['last_seq']}), consumers {consumers}{note}: {'ok' if ok else 'MISMATCH'}"
    )
    return Check(f"stream {name}", ok, line)


def _check_collection(db: Database[dict[str, Any]], entry: dict[str, Any]) -> Check:
    name = entry["name"]
    count = db[name].count_documents({})
    indexes = sorted(str(index["name"]) for index in db[name].list_indexes())
    ok = count == entry["documents"] and set(entry["indexes"]) <= set(indexes)
    line = (
        f"  collection {name:<20} documents {count:>7} (backup {entry['documents']}), "
        f"indexes {len(indexes)} (backup {len(entry['indexes'])}): {'ok' if ok else 'MISMATCH'}"
    )
    return Check(f"collection {name}", ok, line)


# --- The commands ------------------------------------------------------------------------------


def add_backup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", type=Path, help="a new (or empty) folder for the backup")


def add_restore_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", type=Path, help="a folder written by `coderunner backup`")
    parser.add_argument(
        "--replace",
        action="store_true",
        help="delete the streams and the database's collections that are there (with their data) first",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        choices=range(1, 6),
        metavar="N",
        help="copies of each restored stream (default: as backed up; 1 to restore a cluster's backup on one server)",
    )


def _settings(command: str) -> tuple[str, str]:
    from local.stackenv import stack_setting

    nats_url, uri = stack_setting("NATS_URL"), stack_setting("MONGODB_URI")
    if not nats_url or not uri:
        raise SystemExit(f"coderunner {command}: NATS_URL and MONGODB_URI are required (or a running `coderunner up`)")
    return nats_url, uri


def _run(command: str, work: Callable[[], Any]) -> Any:
    try:
        return work()
    except BackupError as exc:
        raise SystemExit(f"coderunner {command}: {exc}") from None
    except PyMongoError as exc:
        raise SystemExit(f"coderunner {command}: MongoDB: {_first(exc)}") from None
    except (NatsError, TimeoutError) as exc:
        raise SystemExit(f"coderunner {command}: NATS: {exc or type(exc).__name__}") from None
    except OSError as exc:
        raise SystemExit(f"coderunner {command}: {exc}") from None


def main_backup(args: argparse.Namespace) -> None:
    nats_url, uri = _settings("backup")
    _run("backup", lambda: asyncio.run(backup(args.dir, nats_url, uri)))


def main_restore(args: argparse.Namespace) -> None:
    nats_url, uri = _settings("restore")
    ok = _run(
        "restore", lambda: asyncio.run(restore(args.dir, nats_url, uri, replace=args.replace, replicas=args.replicas))
    )
    raise SystemExit(0 if ok else 1)
