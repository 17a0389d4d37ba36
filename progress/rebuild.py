"""``coderunner rebuild progress``: the projection recomputed from the streams into fresh
collections, then swapped in, while the gateway keeps answering from the live ones.

1. Apply every stored event (EXECUTIONS ``finished``/``graded``, PROGRESS ``attempt``/``complete``)
   to new collections (``<name>_r<time>``), with the consumer's own code (:mod:`progress.apply`);
   then once more, for what arrived meanwhile.
2. Mark the pointer ``switching``: the live consumer holds the event in hand and waits for the
   swap (up to ``SWAP_WAIT_SECONDS``, then hands it back with a nak) instead of writing. Reads go
   on, from the live collections.
3. Apply what arrived since step 1, point the pointer at the new collections, and resume. The
   consumer's redelivered events then land in the new collections (applied before, they change
   nothing: every write is guarded by its stream sequence).

The old collections are kept (the report names them) until an operator drops them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from pymongo.asynchronous.database import AsyncDatabase

from bus import history, streams
from bus.settle import Permanent
from progress.apply import apply
from progress.projection import Names, Pointer, Projection, pointer, set_pointer
from schemas import subjects
from schemas.deadletter import DeadLetterReason
from schemas.executions import execution_decoder
from schemas.progress import progress_decoder
from schemas.submissions import SubmissionRequested

log = logging.getLogger(__name__)

_SOURCES: dict[str, tuple[str, msgspec.json.Decoder[Any]]] = {
    streams.EXECUTIONS: (subjects.EXECUTIONS_ALL, execution_decoder),
    streams.PROGRESS: (subjects.PROGRESS_ALL, progress_decoder),
}


@dataclass
class Report:
    new: Names
    old: Names
    applied: int = 0
    skipped: list[str] = field(default_factory=list)
    positions: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [
            f"progress rebuilt: {self.applied} events applied, up to "
            + ", ".join(f"{s}:{seq}" for s, seq in self.positions.items()),
            f"live collections now: {self.new.records}, {self.new.items}, {self.new.days}",
            f"previous collections kept: {self.old.records}, {self.old.items}, {self.old.days}",
        ]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} events: " + "; ".join(self.skipped[:5]))
        return "\n".join(lines)


async def _catch_up(js: JetStreamContext, projection: Projection, report: Report) -> None:
    async def submission_of(job_id: str) -> SubmissionRequested:
        job = await history.submission_of(js, job_id)
        if job is None:  # its submission has aged out of the stream: nobody to attribute it to
            raise Permanent(DeadLetterReason.UNKNOWN_JOB, f"no submission for job {job_id}")
        return job

    for stream, (subject, decoder) in _SOURCES.items():
        seq = report.positions.get(stream, 0)
        while True:
            try:
                raw = await js.get_msg(stream, seq=seq + 1, subject=subject, next=True, direct=True)
            except NotFoundError:
                break
            assert raw.seq is not None
            seq = raw.seq
            try:
                event = decoder.decode(raw.data or b"")
                if await apply(js, projection, event, seq, submission_of) is not None:
                    report.applied += 1
            except (msgspec.DecodeError, Permanent) as exc:
                report.skipped.append(f"{stream}:{seq} {exc}")
        report.positions[stream] = seq


async def rebuild(
    js: JetStreamContext, db: AsyncDatabase[dict[str, Any]], *, say: Callable[[str], None] = log.info
) -> Report:
    live = await pointer(db)
    if live.switching:
        raise RuntimeError("another rebuild is swapping the projection right now (the pointer says switching)")
    suffix = "r" + datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    projection = Projection(db, Names().suffixed(suffix))
    await projection.ensure_indexes()
    report = Report(new=projection.names, old=live.names)
    say(f"rebuilding into {projection.names.items} (and records, days)")
    await _catch_up(js, projection, report)
    await _catch_up(js, projection, report)  # what arrived during the first pass: keeps step 3 short
    await set_pointer(db, Pointer(suffix=live.suffix, switching=True))
    try:
        await _catch_up(js, projection, report)
        await set_pointer(db, Pointer(suffix=suffix, switching=False))
    except BaseException:
        await set_pointer(db, live)  # the live projection goes on as it was
        raise
    return report
