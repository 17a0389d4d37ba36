"""Accounts: users (argon2id passwords) and refresh-token families. Written only by the gateway.

Sign-in failures are counted per (account, client address) and, more softly, per account, before the
password is checked, so parallel guesses cannot slip past the limit and nobody can lock an owner
out of the addresses they sign in from. A login is a token family with its own record: revoking it
(logout, reuse of a rotated refresh token, a role change) marks the record first, and a refresh
re-reads the record after storing its new token, so no token of a revoked family stays usable.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
import os
import re
import secrets
import time
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

import redis.asyncio as aioredis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from beanie import Document
from pymongo import ASCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from gateway.accounts.models import VISIBLE, LoginRequest, RegisterRequest, TokenPair, UserOut
from gateway.errors import Conflict, InvalidRequest, SignInBusy, TooManyRequests, Unauthorized
from gateway.settings import GatewaySettings
from gateway.tokens import TokenService, hash_refresh_token, new_refresh_token
from telemetry import metrics

Role = Literal["student", "teacher", "admin"]
T = TypeVar("T")

# OWASP password storage: argon2id, at least 19 MiB, 2 iterations, parallelism 1.
HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against when the email is unknown, so both failures cost the same time."""
    return HASHER.hash(secrets.token_urlsafe(16))


class HashingQueue:
    """Password hashing on its own threads, half the cores, with a bounded wait.

    A burst of sign-ins (a class told to start now) queues behind these threads instead of taking
    every core from the requests being served (the stress scenario: 2,000 hashes in a minute made
    every route wait for minutes). When the queue would make a new request wait longer than
    ``max_wait`` seconds, it is refused at once with 503 and a Retry-After of that wait, instead of
    holding its connection for minutes: the wait is the hashes ahead of it times the mean hash time
    (measured) over the threads.
    """

    def __init__(self, max_wait: float, workers: int | None = None) -> None:
        self.workers = workers or max(1, (os.cpu_count() or 2) // 2)
        self.max_wait = max_wait
        self.mean_seconds = 0.05  # argon2id with OWASP's parameters, one core; replaced as measured
        self.in_flight = 0
        self._executor: ThreadPoolExecutor | None = None

    def expected_wait(self) -> float:
        return self.in_flight * self.mean_seconds / self.workers

    def admit(self) -> None:
        """Raise 503 now if a hash started now would wait longer than ``max_wait``."""
        wait = self.expected_wait()
        if wait > self.max_wait:
            raise SignInBusy(
                f"sign-ins are queued for about {wait:.0f} s; try again shortly",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        self.admit()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="password-hash")
        self.in_flight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self._timed, fn, *args)
        finally:
            self.in_flight -= 1

    def _timed(self, fn: Callable[..., T], *args: Any) -> T:
        began = time.perf_counter()
        try:
            return fn(*args)
        finally:
            # A moving average: the estimate follows the machine's real speed within a few hashes.
            self.mean_seconds += (time.perf_counter() - began - self.mean_seconds) * 0.2

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


# Failed sign-ins per 15 minutes: from one address, and for one account from every address but
# the ones it signed in from before (OWASP: lock per source, throttle the account softly).
LOGIN_FAILURES_ALLOWED = 5
ACCOUNT_FAILURES_ALLOWED = 50
LOGIN_FAILURE_WINDOW = 15 * 60

# Counts an attempt before its password is checked, unless a limit is reached. Returns 0, or the
# milliseconds until the limit that was reached resets.
# KEYS: failures from this address, failures from everywhere, the account's known addresses.
# ARGV: address limit, account limit, window (s), the address.
_TAKE_ATTEMPT = """
local known = redis.call('SISMEMBER', KEYS[3], ARGV[4]) == 1
if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[1]) then
  return math.max(1, redis.call('PTTL', KEYS[1]))
end
if not known and tonumber(redis.call('GET', KEYS[2]) or '0') >= tonumber(ARGV[2]) then
  return math.max(1, redis.call('PTTL', KEYS[2]))
end
for i = 1, 2 do
  redis.call('INCR', KEYS[i])
  if redis.call('TTL', KEYS[i]) < 0 then redis.call('EXPIRE', KEYS[i], ARGV[3]) end
end
return 0
"""
# A successful sign-in: this address starts afresh, its attempt is given back to the account, and
# the address becomes one the account signs in from. ARGV: the address, how long it is remembered.
_SIGNED_IN = """
redis.call('DEL', KEYS[1])
if tonumber(redis.call('GET', KEYS[2]) or '0') > 0 then redis.call('DECR', KEYS[2]) end
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[3], ARGV[2])
return 0
"""

# Invisible characters that reorder or hide text (Trojan Source, spoofed names and addresses).
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})  # controls (NUL too), surrogates, line breaks


class User(Document):
    email: str
    password_hash: str
    display_name: str
    level: str
    role: Role = "student"
    created_at: datetime

    class Settings:
        name = "users"
        indexes = [IndexModel([("email", ASCENDING)], unique=True)]


class TokenFamily(Document):
    """One login. ``revoked`` is set before the family's tokens are, and refreshes re-read it."""

    family_id: str
    user_id: str
    revoked: bool = False
    created_at: datetime

    class Settings:
        name = "token_families"
        indexes = [
            IndexModel([("family_id", ASCENDING)], unique=True),
            IndexModel([("user_id", ASCENDING)]),
        ]


class RefreshToken(Document):
    """One refresh token of a login's family. Only its hash is stored."""

    token_hash: str
    family_id: str
    user_id: str
    expires_at: datetime
    rotated_at: datetime | None = None
    revoked: bool = False

    class Settings:
        name = "refresh_tokens"
        indexes = [
            IndexModel([("token_hash", ASCENDING)], unique=True),
            IndexModel([("family_id", ASCENDING)]),
            IndexModel([("user_id", ASCENDING)]),
        ]


DOCUMENTS = [User, TokenFamily, RefreshToken]


def user_out(user: User) -> UserOut:
    return UserOut(id=str(user.id), email=user.email, display_name=user.display_name, level=user.level, role=user.role)


def normalise_email(raw: str) -> str:
    return unicodedata.normalize("NFC", raw.strip().lower())


def _hidden_characters(text: str) -> bool:
    return any(ch in _BIDI_CONTROLS or unicodedata.category(ch) in _FORBIDDEN_CATEGORIES for ch in text)


def clean_email(raw: str) -> str:
    email = normalise_email(raw)
    if _hidden_characters(email):
        raise InvalidRequest("email must not contain control or bidirectional-formatting characters")
    return email


def clean_display_name(raw: str) -> str:
    """NFC, stripped, without controls or bidi overrides, and with something visible in it."""
    name = unicodedata.normalize("NFC", raw).strip()
    if _hidden_characters(name):
        raise InvalidRequest("displayName must not contain control or bidirectional-formatting characters")
    if not re.search(VISIBLE, name):  # the request's pattern (RegisterRequest) says the same
        raise InvalidRequest("displayName must not be blank")
    return name


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]


class AccountService:
    def __init__(self, settings: GatewaySettings, tokens: TokenService, redis: aioredis.Redis) -> None:
        self.settings = settings
        self.tokens = tokens
        self.redis = redis
        self.hashing = HashingQueue(settings.sign_in_max_wait_seconds)

    async def register(self, data: RegisterRequest) -> UserOut:
        email, display_name = clean_email(data.email), clean_display_name(data.display_name)
        password_hash = await self.hashing.run(HASHER.hash, data.password)
        user = User(
            email=email,
            password_hash=password_hash,
            display_name=display_name,
            level=data.level,
            created_at=datetime.now(UTC),
        )
        try:
            await user.insert()
        except DuplicateKeyError as exc:
            raise Conflict("an account with this email already exists") from exc
        return user_out(user)

    async def login(self, data: LoginRequest, client: str) -> TokenPair:
        email = normalise_email(data.email)
        keys = [
            f"coderunner:login-failures-from:{_digest(email, client)}",
            f"coderunner:login-failures:{email}",
            f"coderunner:login-addresses:{email}",
        ]
        # Refused before the attempt is counted: a busy gateway must not lock anyone out.
        self.hashing.admit()
        # Counted before the (slow) password check, atomically: parallel guesses cannot all pass.
        wait_ms = int(
            await self.redis.eval(
                _TAKE_ATTEMPT, 3, *keys, LOGIN_FAILURES_ALLOWED, ACCOUNT_FAILURES_ALLOWED, LOGIN_FAILURE_WINDOW, client
            )
        )
        if wait_ms > 0:
            metrics.QUOTA_REFUSALS.labels("sign_in").inc()
            raise TooManyRequests(
                "too many failed sign-ins; try again later", headers={"Retry-After": str(math.ceil(wait_ms / 1000))}
            )
        user = await User.find_one(User.email == email)
        ok = await self.hashing.run(_verify, user.password_hash if user else None, data.password)
        if not ok or user is None:
            # One message whether the email or the password was wrong. The attempt stays counted.
            raise Unauthorized("email or password is incorrect")
        remember = self.settings.refresh_token_days * 86_400
        await self.redis.eval(_SIGNED_IN, 3, *keys, client, remember)
        family_id = secrets.token_urlsafe(16)
        await TokenFamily(family_id=family_id, user_id=str(user.id), created_at=datetime.now(UTC)).insert()
        pair, _ = await self._issue(user, family_id)
        return pair

    async def _issue(self, user: User, family_id: str) -> tuple[TokenPair, str]:
        """A new pair in ``family_id``, and the new refresh token's hash."""
        token, token_hash = new_refresh_token()
        expires = datetime.now(UTC) + timedelta(days=self.settings.refresh_token_days)
        await RefreshToken(
            token_hash=token_hash, family_id=family_id, user_id=str(user.id), expires_at=expires
        ).insert()
        pair = TokenPair(
            access_token=self.tokens.access_token(str(user.id), user.role, family_id),
            refresh_token=token,
            expires_in=self.settings.access_token_seconds,
        )
        return pair, token_hash

    async def refresh(self, refresh_token: str) -> TokenPair:
        token_hash = hash_refresh_token(refresh_token)
        stored = await RefreshToken.find_one(RefreshToken.token_hash == token_hash)
        if stored is None or stored.revoked or stored.expires_at.replace(tzinfo=UTC) < datetime.now(UTC):
            raise Unauthorized("refresh token is not valid")
        collection = RefreshToken.get_pymongo_collection()
        # Rotate atomically: only one request can move this token from unused to rotated.
        result = await collection.update_one(
            {"token_hash": token_hash, "rotated_at": None, "revoked": False},
            {"$set": {"rotated_at": datetime.now(UTC)}},
        )
        if result.modified_count != 1:
            # Reuse of a rotated token: someone else holds a copy. Revoke the whole login.
            await self._revoke_family(stored.family_id, stored.user_id)
            raise Unauthorized("refresh token was already used; please sign in again")
        user = await User.get(stored.user_id)
        if user is None:
            raise Unauthorized("account no longer exists")
        pair, new_hash = await self._issue(user, stored.family_id)
        # A revocation marks the family record before the family's tokens. Read after our insert,
        # the record is either unrevoked (then the revocation's update_many comes later and covers
        # the new token) or revoked (then the new token is revoked here): it never escapes. This
        # request still won the rotation, so it answers with the pair, which is already dead.
        if await self._family_revoked(stored.family_id):
            await collection.update_one({"token_hash": new_hash}, {"$set": {"revoked": True}})
        return pair

    async def logout(self, refresh_token: str) -> None:
        stored = await RefreshToken.find_one(RefreshToken.token_hash == hash_refresh_token(refresh_token))
        if stored is not None:
            await self._revoke_family(stored.family_id, stored.user_id)

    async def _family_revoked(self, family_id: str) -> bool:
        record = await TokenFamily.get_pymongo_collection().find_one({"family_id": family_id}, {"revoked": 1})
        return bool(record and record.get("revoked"))

    async def _revoke_family(self, family_id: str, user_id: str) -> None:
        """Record first, then the tokens, then the deny list for its unexpired access tokens."""
        await TokenFamily.get_pymongo_collection().update_one(
            {"family_id": family_id},
            # Upsert: families from before family records existed get one too.
            {"$set": {"revoked": True}, "$setOnInsert": {"user_id": user_id, "created_at": datetime.now(UTC)}},
            upsert=True,
        )
        await RefreshToken.get_pymongo_collection().update_many({"family_id": family_id}, {"$set": {"revoked": True}})
        await self.tokens.deny_family(family_id)

    async def me(self, user_id: str) -> UserOut:
        user = await User.get(user_id)
        if user is None:
            raise Unauthorized("account no longer exists")
        return user_out(user)


def _verify(password_hash: str | None, password: str) -> bool:
    try:
        return HASHER.verify(password_hash or _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return False
