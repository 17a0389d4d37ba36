"""Accounts: users (argon2id passwords) and refresh-token families. Written only by the gateway."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from typing import Literal

import redis.asyncio as aioredis
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from beanie import Document
from pymongo import ASCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from gateway.errors import Conflict, TooManyRequests, Unauthorized
from gateway.models import LoginRequest, RegisterRequest, TokenPair, UserOut
from gateway.settings import GatewaySettings
from gateway.tokens import TokenService, hash_refresh_token, new_refresh_token

Role = Literal["student", "teacher", "admin"]

# OWASP password storage: argon2id, at least 19 MiB, 2 iterations, parallelism 1.
HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
# A hash to verify against when the email is unknown, so both failures cost the same time.
_DUMMY_HASH = HASHER.hash(secrets.token_urlsafe(16))
LOGIN_FAILURES_ALLOWED = 5
LOGIN_FAILURE_WINDOW = 15 * 60


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
        ]


DOCUMENTS = [User, RefreshToken]


def user_out(user: User) -> UserOut:
    return UserOut(id=str(user.id), email=user.email, display_name=user.display_name, level=user.level, role=user.role)


class AccountService:
    def __init__(self, settings: GatewaySettings, tokens: TokenService, redis: aioredis.Redis) -> None:
        self.settings = settings
        self.tokens = tokens
        self.redis = redis

    async def register(self, data: RegisterRequest) -> UserOut:
        password_hash = await asyncio.to_thread(HASHER.hash, data.password)
        user = User(
            email=data.email.strip().lower(),
            password_hash=password_hash,
            display_name=data.display_name.strip(),
            level=data.level,
            created_at=datetime.now(UTC),
        )
        try:
            await user.insert()
        except DuplicateKeyError as exc:
            raise Conflict("an account with this email already exists") from exc
        return user_out(user)

    async def login(self, data: LoginRequest, client: str) -> TokenPair:
        email = data.email.strip().lower()
        failures_key = f"coderunner:login-failures:{email}"
        failures = int(await self.redis.get(failures_key) or 0)
        if failures >= LOGIN_FAILURES_ALLOWED:
            ttl = max(1, int(await self.redis.ttl(failures_key)))
            raise TooManyRequests("too many failed sign-ins; try again later", headers={"Retry-After": str(ttl)})
        user = await User.find_one(User.email == email)
        ok = await asyncio.to_thread(_verify, user.password_hash if user else _DUMMY_HASH, data.password)
        if not ok or user is None:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incr(failures_key)
                pipe.expire(failures_key, LOGIN_FAILURE_WINDOW)
                await pipe.execute()
            # One message whether the email or the password was wrong.
            raise Unauthorized("email or password is incorrect")
        await self.redis.delete(failures_key)
        return await self._issue(user, family_id=secrets.token_urlsafe(16))

    async def _issue(self, user: User, family_id: str) -> TokenPair:
        token, token_hash = new_refresh_token()
        expires = datetime.now(UTC) + timedelta(days=self.settings.refresh_token_days)
        await RefreshToken(
            token_hash=token_hash, family_id=family_id, user_id=str(user.id), expires_at=expires
        ).insert()
        return TokenPair(
            access_token=self.tokens.access_token(str(user.id), user.role),
            refresh_token=token,
            expires_in=self.settings.access_token_seconds,
        )

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
            await self._revoke_family(stored.family_id)
            raise Unauthorized("refresh token was already used; please sign in again")
        user = await User.get(stored.user_id)
        if user is None:
            raise Unauthorized("account no longer exists")
        return await self._issue(user, family_id=stored.family_id)

    async def logout(self, refresh_token: str) -> None:
        stored = await RefreshToken.find_one(RefreshToken.token_hash == hash_refresh_token(refresh_token))
        if stored is not None:
            await self._revoke_family(stored.family_id)

    async def _revoke_family(self, family_id: str) -> None:
        await RefreshToken.get_pymongo_collection().update_many({"family_id": family_id}, {"$set": {"revoked": True}})

    async def me(self, user_id: str) -> UserOut:
        user = await User.get(user_id)
        if user is None:
            raise Unauthorized("account no longer exists")
        return user_out(user)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
