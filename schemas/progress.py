"""Progress events: what a student did that counts towards their progress, and the projection's
own "this user's progress changed" (which lets caches drop what they kept).

Published on ``coderunner.v1.progress.<userId>.<kind>`` (stream PROGRESS):

- ``attempt`` (:class:`AttemptRecorded`): ``POST /progress/attempt`` (gateway).
- ``complete`` (:class:`ItemCompleted`): ``POST /progress/complete`` (gateway): a reading, or a
  problem without tests, marked done by the student.
- ``changed`` (:class:`ProgressChanged`): the progress consumer applied an event for this user.

Grades count through ``grading.graded`` on EXECUTIONS; they are not repeated here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, get_args

import msgspec
from msgspec import Struct


class _ProgressBase(Struct, frozen=True, kw_only=True, tag_field="type", rename="camel"):
    user_id: str
    # Unique per event: a client's Idempotency-Key turns into the same id (and Nats-Msg-Id).
    event_id: str
    at: datetime
    v: int = 1


class AttemptRecorded(_ProgressBase, frozen=True, tag="progress.attempt"):
    problem_id: str
    code: str = ""


class ItemCompleted(_ProgressBase, frozen=True, tag="progress.complete"):
    # "problem:<id>" for a problem without tests, "reading:<sessionId>" for a session's reading.
    item: str


class ProgressChanged(_ProgressBase, frozen=True, tag="progress.changed"):
    # The item whose progress changed ("problem:<id>", "reading:<sessionId>").
    item: str
    # Where the applied event came from: stream and sequence.
    source: str


ProgressEvent = AttemptRecorded | ItemCompleted | ProgressChanged
"""The union of everything on the PROGRESS stream."""

progress_decoder: msgspec.json.Decoder[ProgressEvent] = msgspec.json.Decoder(ProgressEvent)

ProgressKind = Literal["attempt", "complete", "changed"]


def progress_kind(event: ProgressEvent | type[ProgressEvent]) -> ProgressKind:
    """The event's subject suffix: the last part of its tag."""
    cls = event if isinstance(event, type) else type(event)
    tag = cls.__struct_config__.tag
    assert isinstance(tag, str)
    kind = tag.rsplit(".", 1)[1]
    assert kind in get_args(ProgressKind)
    return kind  # type: ignore[return-value]
