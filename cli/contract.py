"""The contract's generated files, from the channel catalogue (``schemas/catalog.py``).

- ``schemas/json/events.schema.json``: every payload's JSON Schema in one document (``coderunner
  schema`` prints it);
- ``schemas/json/<family>.schema.json``: one self-contained JSON Schema per payload family;
- ``schemas/asyncapi.yaml``: the AsyncAPI 3.0 document (``coderunner asyncapi`` prints it).

``coderunner schema --write`` writes them all; tests fail when a committed file differs from what
:func:`generated` returns.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import yaml

from bus import streams
from schemas import catalog
from schemas.catalog import Channel
from schemas.subjects import PREFIX

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DIR = ROOT / "schemas" / "json"
ASYNCAPI = ROOT / "schemas" / "asyncapi.yaml"
DRAFT = "https://json-schema.org/draft/2020-12/schema"
CONTRACT_VERSION = PREFIX.rsplit(".", 1)[1]  # "v1": bumped only by a breaking change


def _json(doc: object) -> str:
    return msgspec.json.format(msgspec.json.encode(doc)).decode() + "\n"


def combined_schema() -> dict[str, Any]:
    """Every payload's JSON Schema in one document (its ``$defs``), as ``coderunner schema`` prints it."""
    _, components = msgspec.json.schema_components(catalog.families().values(), ref_template="#/$defs/{name}")
    return {"$schema": DRAFT, "title": f"Code Runner events {CONTRACT_VERSION}", "$defs": components}


def events_schema() -> str:
    return _json(combined_schema())


def family_schema(family: str, payload: Any) -> dict[str, Any]:
    """One family's payload as a self-contained JSON Schema: validate a message against it directly."""
    schema = msgspec.json.schema(payload, ref_template="#/$defs/{name}")
    channels = [c for c in catalog.CHANNELS if c.family == family]
    where = "; ".join(
        (f"Payloads on {c.address} (stream {c.stream})" if c.stream else f"Replies to requests on {c.address}")
        for c in channels
    )
    where = where or "The result document: GET /execution/result/{jobId} and the data of the SSE `done` event"
    return {"$schema": DRAFT, "title": f"Code Runner {family} {CONTRACT_VERSION}", "description": where, **schema}


def generated() -> dict[Path, str]:
    """Every generated file of the contract and its text."""
    files = {SCHEMA_DIR / "events.schema.json": events_schema()}
    for family, payload in catalog.families().items():
        files[SCHEMA_DIR / f"{family}.schema.json"] = _json(family_schema(family, payload))
    files[ASYNCAPI] = asyncapi_yaml()
    return files


def write() -> list[Path]:
    """Write every generated file, and remove stale ones from ``schemas/json/``."""
    files = generated()
    SCHEMA_DIR.mkdir(parents=True, exist_ok=True)
    for stale in set(SCHEMA_DIR.glob("*.schema.json")) - set(files):
        stale.unlink()
    for path, text in files.items():
        path.write_text(text)
    return sorted(files)


# AsyncAPI 3.0 ---------------------------------------------------------------------------------------


def _camel(text: str) -> str:
    first, *rest = re.split(r"[^A-Za-z0-9]+", text)
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


def message_id(message: type[msgspec.Struct]) -> str:
    return _camel(catalog.tag(message))


def _summary(message: type[msgspec.Struct]) -> str | None:
    doc = (message.__doc__ or "").strip()
    # The docstring's first paragraph, its reStructuredText literals as Markdown's.
    return doc.split("\n\n", 1)[0].replace("\n", " ").replace("``", "`") if doc else None


def _subject_of(channel: Channel, message: type[msgspec.Struct]) -> str:
    """The message's subject with a wildcard for each variable token (its kind filled in)."""

    def token(match: re.Match[str]) -> str:
        return catalog.tag(message).rsplit(".", 1)[1] if match.group(1) == "kind" else "*"

    return re.sub(r"\{(\w+)\}", token, channel.address)


def subject_matches(filter_subject: str, subject: str) -> bool:
    """Whether a NATS filter takes every message of ``subject`` (whose ``*`` tokens stand for any)."""
    want, have = filter_subject.split("."), subject.split(".")
    for i, part in enumerate(want):
        if part == ">":
            return len(have) > i
        if i >= len(have) or part not in ("*", have[i]):
            return False
    return len(want) == len(have)


def _headers(channel: Channel, message: type[msgspec.Struct]) -> dict[str, Any]:
    props: dict[str, Any] = {}
    msg_id = channel.msg_ids.get(catalog.tag(message))
    if msg_id:
        props["Nats-Msg-Id"] = {"type": "string", "description": f"The dedup key: {msg_id}"}
    props["traceparent"] = {"type": "string", "description": "W3C trace context, when the publisher traces."}
    return {"type": "object", "properties": props}


def _stream_facts() -> dict[str, dict[str, Any]]:
    """Each stream's configuration as deployed with the default settings (bus/streams.py)."""
    from config.common import CommonSettings

    defaults = {f.name: f.default for f in msgspec.structs.fields(CommonSettings)}
    limits = streams.BusLimits(
        **{name: defaults[name] for name in streams.BusLimits.__dataclass_fields__ if name in defaults}
    )
    facts = {}
    for config in streams.stream_configs(limits):
        assert config.name is not None and config.retention is not None
        facts[config.name] = {
            "stream": config.name,
            "subjects": config.subjects,
            "retention": config.retention.value,
            "maxAgeSeconds": config.max_age,  # 0: kept without an age limit (FLAGS)
            **({"maxAgeSetting": "STREAM_RETENTION_SECONDS"} if config.max_age else {}),
            "duplicateWindowSeconds": config.duplicate_window,
            "duplicateWindowSetting": "DUPLICATE_WINDOW_SECONDS",
            "allowDirect": config.allow_direct,
        }
    return facts


def asyncapi() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every catalogued channel.

    AsyncAPI's NATS bindings describe core NATS only, so the JetStream specifics (stream, retention,
    dedup key, durable consumers) are ``x-`` extensions.
    """
    all_messages = [m for c in catalog.CHANNELS for m in catalog.messages(c)]
    # Each message's struct (never the unions): msgspec writes a union's discriminator the OpenAPI
    # way, an object, where AsyncAPI's Schema Object expects a property name.
    _, schemas = msgspec.json.schema_components(
        [*all_messages, *catalog.DOCUMENTS.values()], ref_template="#/components/schemas/{name}"
    )
    stream_facts = _stream_facts()
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for channel in catalog.CHANNELS:
        refs = {message_id(m): {"$ref": f"#/components/messages/{message_id(m)}"} for m in catalog.messages(channel)}
        for message in catalog.messages(channel):
            tag = catalog.tag(message)
            entry: dict[str, Any] = {
                "name": tag,
                "title": message.__name__,
                "contentType": "application/json",
                "headers": _headers(channel, message),
                "payload": {"$ref": f"#/components/schemas/{message.__name__}"},
            }
            if summary := _summary(message):
                entry["summary"] = summary
            if tag in channel.msg_ids:
                entry["x-nats-msg-id"] = channel.msg_ids[tag]
            if tag in channel.internal:
                entry["description"] = "Internal to Code Runner: do not rely on it (restrict it with NATS permissions)."
                entry["x-internal"] = True
            messages[message_id(message)] = entry
        spec: dict[str, Any] = {
            "address": channel.address,
            "title": channel.stream or channel.address,
            "description": channel.description,
        }
        if channel.parameters:
            spec["parameters"] = {
                p.name: {
                    "description": p.description,
                    **({"enum": list(p.enum)} if p.enum else {}),
                    **({"examples": list(p.examples)} if p.examples else {}),
                }
                for p in channel.parameters
            }
        if channel.pattern == "request-reply":
            spec["messages"] = {"request": {"$ref": "#/components/messages/emptyRequest"}}
            channels[channel.id] = spec
            channels[f"{channel.id}Reply"] = {
                "address": None,
                "description": "The requester's inbox (the request's NATS reply subject).",
                "messages": refs,
            }
            operations[f"answer{channel.id[:1].upper()}{channel.id[1:]}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{channel.id}"},
                "summary": "; ".join(channel.publishers),
                "description": f"{channel.delivery} Requesters: {'; '.join(channel.consumers)}.",
                "messages": [{"$ref": f"#/channels/{channel.id}/messages/request"}],
                "reply": {
                    "channel": {"$ref": f"#/channels/{channel.id}Reply"},
                    "messages": [{"$ref": f"#/channels/{channel.id}Reply/messages/{name}"} for name in refs],
                },
            }
            continue
        spec["messages"] = refs
        assert channel.stream is not None
        durables = [d for d in streams.DURABLES if d.stream == channel.stream]
        spec["x-jetstream"] = {
            **stream_facts[channel.stream],
            "delivery": channel.delivery,
            "ordering": channel.ordering,
            "durableConsumers": [
                {"name": d.name, "owner": d.owner, "filterSubjects": list(d.filter_subjects), "ackPolicy": "explicit"}
                for d in durables
            ],
        }
        channels[channel.id] = spec
        operations[f"publish{channel.id[:1].upper()}{channel.id[1:]}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel.id}"},
            "summary": f"Published by {'; '.join(channel.publishers)}.",
            "messages": [{"$ref": f"#/channels/{channel.id}/messages/{name}"} for name in refs],
        }
        for durable in durables:
            taken = [
                message_id(m)
                for m in catalog.messages(channel)
                if any(subject_matches(f, _subject_of(channel, m)) for f in durable.filter_subjects)
            ]
            operations[_camel(f"consume {durable.name}")] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{channel.id}"},
                "summary": f"{durable.description} ({durable.owner}).",
                "messages": [{"$ref": f"#/channels/{channel.id}/messages/{name}"} for name in taken],
                "x-durable": {"name": durable.name, "filterSubjects": list(durable.filter_subjects)},
            }
    messages["emptyRequest"] = {
        "name": "empty",
        "title": "An empty request",
        "contentType": "text/plain",
        "payload": {"type": "string", "maxLength": 0, "description": "No body."},
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Code Runner events",
            "version": CONTRACT_VERSION,
            "description": (
                "The event contract of Code Runner, generated from schemas/catalog.py by `coderunner asyncapi`: "
                "do not edit. See docs/events.md (For other services). Payloads only grow, with defaults "
                "(their `v` is bumped); a breaking change is a new subject version (coderunner.v2)."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "nats": {
                "host": "localhost:4222",
                "protocol": "nats",
                "description": "Your deployment's NATS with JetStream (NATS_URL).",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def asyncapi_yaml() -> str:
    # Long lines stay unfolded, so a diff shows what changed.
    return yaml.safe_dump(asyncapi(), sort_keys=False, allow_unicode=True, width=1000)
