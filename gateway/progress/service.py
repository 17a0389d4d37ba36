"""Progress: reads of the progress projection (written by the progress process only) and the events
behind ``POST /progress/attempt`` and ``/progress/complete``.

The summary is cached in Redis for :data:`SUMMARY_TTL_SECONDS`; the caching consumer drops a user's
summary when the progress consumer announces a change for them (``progress.changed``), so a new
grade shows at once.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
from datetime import UTC, date, datetime, timedelta
from typing import Any

import msgspec
import redis.asyncio as aioredis
from nats.js import JetStreamContext
from pymongo.asynchronous.database import AsyncDatabase
from redis.exceptions import RedisError

from bus import client
from consumers.caching import progress_generation_key, progress_summary_key
from curriculum.store import CurriculumStore
from flags.declared import READ_ONLY
from flags.store import FlagReader
from gateway.errors import RETRY_AFTER_BUS, BusUnavailable, Conflict, GatewayError, InvalidRequest, ReadOnly
from gateway.guards import is_staff
from gateway.progress.models import (
    AttemptRequest,
    CompleteRequest,
    Count,
    ProgressItem,
    ProgressList,
    Recorded,
    Summary,
)
from gateway.tokens import Principal
from progress.projection import Names, pointer, problem_item, read_stamp, reading_item
from schemas import subjects
from schemas.progress import AttemptRecorded, ItemCompleted
from telemetry import metrics

log = logging.getLogger(__name__)
SUMMARY_TTL_SECONDS = 60


class ProgressNotFound(GatewayError, status=404, title="Progress not found", slug="progress-not-found"): ...


def event_id_for(user_id: str, idempotency_key: str | None, route: str = "attempt") -> str:
    """A fresh id, or one derived from (user, key, route): a replayed request is the same event.
    Keys are scoped to their route (attempt, complete)."""
    if idempotency_key is None:
        return secrets.token_urlsafe(16)
    prefix = "progress" if route == "attempt" else f"progress-{route}"
    digest = hashlib.sha256(f"{prefix}\x00{user_id}\x00{idempotency_key}".encode()).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class ProgressService:
    def __init__(
        self,
        js: JetStreamContext,
        redis: aioredis.Redis,
        db: AsyncDatabase[dict[str, Any]],
        store: CurriculumStore,
        flags: FlagReader | None = None,
    ) -> None:
        self.js = js
        # The feature flags (flags/): READ_ONLY refuses new progress records (they queue work).
        self.flags = flags
        self.redis = redis
        self.db = db
        self.problems = db["problems"]
        self.store = store

    async def _live(self) -> Names:
        """The live collections (a rebuild may have swapped new ones in)."""
        return (await pointer(self.db)).names

    @staticmethod
    def whose(principal: Principal, user_id: str | None) -> str:
        """Students read their own progress; staff anyone's. Another user's is a 404, as for no user."""
        if user_id is None or user_id == principal.user_id:
            return principal.user_id
        if not is_staff(principal):
            raise ProgressNotFound(f"no progress for user {user_id!r}")
        return user_id

    async def list(self, user_id: str, *, level: str | None, session: str | None) -> ProgressList:
        query: dict[str, Any] = {"user_id": user_id}
        if level is not None:
            query["level"] = level
        if session is not None:
            query["session"] = session
        docs = await self.db[(await self._live()).items].find(query).sort("item", 1).to_list(None)
        return ProgressList(user_id=user_id, items=[_item(d) for d in docs])

    async def summary(self, user_id: str) -> Summary:
        # The generation is read before the projection: a change announced while the summary is
        # computed moves readers to a new key, so a stale summary is never served from the cache.
        key: str | None = None
        cached = None
        try:
            generation = int(await self.redis.get(progress_generation_key(user_id)) or 0)
            key = progress_summary_key(user_id, generation)
            cached = await self.redis.get(key)
        except RedisError as exc:
            log.warning("progress summary cache unavailable: %s", exc)
        if cached is not None:
            metrics.CACHE.labels("progress_summary", "hit").inc()
            return msgspec.json.decode(cached, type=Summary)
        metrics.CACHE.labels("progress_summary", "miss").inc()
        summary = await self._summary(user_id)
        if key is not None:
            try:
                await self.redis.set(key, msgspec.json.encode(summary), ex=SUMMARY_TTL_SECONDS)
            except RedisError as exc:
                log.warning("progress summary not cached: %s", exc)
        return summary

    async def _summary(self, user_id: str) -> Summary:
        names = await self._live()
        items = [_item(d) for d in await self.db[names.items].find({"user_id": user_id}).to_list(None)]
        totals: dict[tuple[str, str], int] = {}
        async for doc in self.problems.find({"deleted": False}, {"level": 1, "session": 1}):
            place = (doc.get("level", ""), doc.get("session", ""))
            totals[place] = totals.get(place, 0) + 1
        solved_at: dict[tuple[str, str], int] = {}
        for it in items:
            if it.item.startswith("problem:") and it.solved:
                solved_at[(it.level, it.session)] = solved_at.get((it.level, it.session), 0) + 1
        levels: dict[str, list[int]] = {}
        for (level, _), total in totals.items():
            levels.setdefault(level, [0, 0])[1] += total
        for (level, _), solved in solved_at.items():
            levels.setdefault(level, [0, 0])[0] += solved
        found = await self.db[names.days].find({"user_id": user_id}).to_list(None)
        days = sorted((d["day"] for d in found), reverse=True)
        problems = [it for it in items if it.item.startswith("problem:")]
        return Summary(
            user_id=user_id,
            solved=sum(it.solved for it in problems),
            attempted=sum(it.attempts > 0 for it in problems),
            attempts=sum(it.attempts for it in problems),
            readings_completed=sum(it.completed for it in items if it.item.startswith("reading:")),
            levels=[Count(id=level, solved=s, total=t) for level, (s, t) in sorted(levels.items())],
            sessions=[
                Count(id=session, level=level, solved=solved_at.get((level, session), 0), total=total)
                for (level, session), total in sorted(totals.items())
            ],
            streak_days=streak(days, datetime.now(UTC).date()),
            last_active_day=days[0] if days else None,
        )

    async def attempt(self, principal: Principal, body: AttemptRequest, idempotency_key: str | None) -> Recorded:
        if await self.store.problem(body.problem_id) is None:
            raise ProgressNotFound(f"no problem {body.problem_id}")
        event_id = event_id_for(principal.user_id, idempotency_key)
        event = AttemptRecorded(
            user_id=principal.user_id,
            event_id=event_id,
            at=datetime.now(UTC),
            problem_id=str(body.problem_id),
            code=body.code,
        )
        await self._publish(subjects.progress(principal.user_id, "attempt"), event, event_id)
        return Recorded(event_id=event_id, item=problem_item(str(body.problem_id)))

    async def complete(self, principal: Principal, body: CompleteRequest, idempotency_key: str | None) -> Recorded:
        if (body.problem_id is None) == (body.session_id is None):
            raise InvalidRequest("send exactly one of problemId (a problem without tests) and sessionId (a reading)")
        if body.problem_id is not None:
            stored = await self.store.problem(body.problem_id)
            if stored is None:
                raise ProgressNotFound(f"no problem {body.problem_id}")
            if stored.problem.tests:
                raise Conflict(f"problem {body.problem_id} has tests: it is complete when a submission is accepted")
            item = problem_item(str(body.problem_id))
        else:
            assert body.session_id is not None
            if await self.store.session(body.session_id) is None:
                raise ProgressNotFound(f"no session {body.session_id!r}")
            item = reading_item(body.session_id)
        event_id = event_id_for(principal.user_id, idempotency_key, "complete")
        event = ItemCompleted(user_id=principal.user_id, event_id=event_id, at=datetime.now(UTC), item=item)
        await self._publish(subjects.progress(principal.user_id, "complete"), event, event_id)
        return Recorded(event_id=event_id, item=item)

    async def _publish(self, subject: str, event: AttemptRecorded | ItemCompleted, event_id: str) -> None:
        if self.flags is not None and self.flags.enabled(READ_ONLY):
            raise ReadOnly("recording progress is paused")
        try:
            await client.publish(self.js, subject, event, msg_id=f"progress-{event_id}")
        except client.NotPublished as exc:
            raise BusUnavailable(
                "progress is unavailable; nothing was recorded, try again shortly",
                headers={"Retry-After": RETRY_AFTER_BUS},
            ) from exc


def streak(days_desc: list[str], today: date) -> int:
    """Consecutive days with activity, ending today or yesterday (a streak lasts until a day is missed)."""
    seen = set(days_desc)
    day = today if today.isoformat() in seen else today - timedelta(days=1)
    count = 0
    while day.isoformat() in seen:
        count += 1
        day -= timedelta(days=1)
    return count


def _item(doc: dict[str, Any]) -> ProgressItem:
    # bool(): the MongoDB-wire server over SQLite (nx-27017) may hand a stored true back as 1.
    return ProgressItem(
        item=doc["item"],
        level=doc.get("level", ""),
        session=doc.get("session", ""),
        problem_id=doc.get("problem_id"),
        attempts=doc.get("attempts", 0),
        best_score=doc.get("best_score"),
        solved=bool(doc.get("solved", False)),
        completed=bool(doc.get("completed", False)),
        first_solved_at=read_stamp(doc.get("first_solved_at")),
        completed_at=read_stamp(doc.get("completed_at")),
        last_submitted_at=read_stamp(doc.get("last_submitted_at")),
        last_verdict=doc.get("last_verdict"),
        last_code=doc.get("last_code"),
    )
