"""Access tokens (JWT, HS256, 15 min) and job-scoped SSE tickets; opaque refresh tokens.

Access tokens carry their login's token family (``fid``). Revoking a family (logout, refresh-token
reuse, a role change) also puts it on a deny list in Redis for as long as a token of it can live,
so its access tokens and tickets stop working at once instead of at expiry.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
import redis.asyncio as aioredis

from gateway.errors import Unauthorized
from gateway.settings import GatewaySettings

ALGORITHM = "HS256"
REQUIRED = ["exp", "iat", "sub", "iss", "aud"]
SSE_TICKET_SECONDS = 600
ROLES = ("student", "teacher", "admin")
# `coderunner user-role` has no gateway settings: its deny-list entries last as long as the
# longest access token ACCESS_TOKEN_SECONDS allows, or an SSE ticket.
MAX_DENY_SECONDS = max(3600, SSE_TICKET_SECONDS)


def family_deny_key(family_id: str) -> str:
    """Set while a revoked login's access tokens and tickets may still be unexpired."""
    return f"coderunner:deny:family:{family_id}"


def role_deny_key(user_id: str, role: str) -> str:
    """Set while a user's tokens may still claim ``role``, which they no longer have."""
    return f"coderunner:deny:role:{user_id}:{role}"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling. What their role lets them do is decided in ``gateway.guards``."""

    user_id: str
    role: str
    family_id: str | None = None


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if there is one."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class TokenService:
    def __init__(self, settings: GatewaySettings, redis: aioredis.Redis | None = None) -> None:
        self.settings = settings
        self._key = settings.jwt_secret.encode()
        self.redis = redis
        # A deny-list entry must outlive every access token and ticket it denies.
        self.deny_seconds = max(settings.access_token_seconds, SSE_TICKET_SECONDS)

    def _encode(self, claims: dict[str, Any], audience: str, ttl: int) -> str:
        now = int(time.time())
        payload = {**claims, "iat": now, "exp": now + ttl, "iss": self.settings.jwt_issuer, "aud": audience}
        return jwt.encode(payload, self._key, algorithm=ALGORITHM)

    def _decode(self, token: str, audience: str) -> dict[str, Any]:
        try:
            # The algorithm is pinned: "none" and RS/HS confusion are rejected by construction.
            return jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=audience,
                issuer=self.settings.jwt_issuer,
                options={"require": REQUIRED},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from exc

    def access_token(self, user_id: str, role: str, family_id: str) -> str:
        return self._encode(
            {"sub": user_id, "role": role, "fid": family_id},
            self.settings.jwt_audience,
            self.settings.access_token_seconds,
        )

    def user_of(self, token: str) -> str | None:
        """The user an access token was signed for, or None when it is not one of ours (or expired).

        Only the signature and claims are checked, not revocation: the API quota uses it to count a
        request against its user; the route's own authentication still decides whether it may run.
        """
        try:
            return str(self._decode(token, self.settings.jwt_audience)["sub"])
        except Unauthorized:
            return None

    async def principal(self, token: str) -> Principal:
        """The signed-in user, unless the token's login was revoked or its role was taken away."""
        claims = self._decode(token, self.settings.jwt_audience)
        fid = claims.get("fid")
        principal = Principal(
            user_id=str(claims["sub"]),
            role=str(claims.get("role", "student")),
            family_id=str(fid) if fid is not None else None,
        )
        await self._check_not_denied(principal.user_id, principal.role, principal.family_id)
        return principal

    async def _check_not_denied(self, user_id: str, role: str | None, family_id: str | None) -> None:
        """One Redis round trip: is the token's family revoked, or its role no longer the user's?"""
        if self.redis is None:
            return
        keys = [family_deny_key(family_id)] if family_id else []
        if role is not None:
            keys.append(role_deny_key(user_id, role))
        if keys and await self.redis.exists(*keys):
            raise Unauthorized("this sign-in was revoked; please sign in again")

    async def deny_family(self, family_id: str) -> None:
        """Stop a revoked login's access tokens and tickets now rather than at their expiry."""
        if self.redis is not None:
            await self.redis.set(family_deny_key(family_id), 1, ex=self.deny_seconds)

    def sse_ticket(self, user_id: str, job_id: str, family_id: str | None = None) -> str:
        """A short-lived token good for one job's event stream only (EventSource sends no headers)."""
        claims = {"sub": user_id, "job": job_id, **({"fid": family_id} if family_id else {})}
        return self._encode(claims, f"{self.settings.jwt_audience}:sse", SSE_TICKET_SECONDS)

    def ticket_job(self, ticket: str, job_id: str) -> str:
        claims = self._decode(ticket, f"{self.settings.jwt_audience}:sse")
        if claims.get("job") != job_id:
            raise Unauthorized("ticket is for another job")
        return str(claims["sub"])

    async def check_ticket(self, ticket: str) -> None:
        """Refuse a ticket whose login was revoked (the job is checked by ``ticket_job``)."""
        claims = self._decode(ticket, f"{self.settings.jwt_audience}:sse")
        fid = claims.get("fid")
        await self._check_not_denied(str(claims["sub"]), None, str(fid) if fid is not None else None)


def new_refresh_token() -> tuple[str, str]:
    """An opaque refresh token and the hash under which it is stored (never the token itself)."""
    token = secrets.token_urlsafe(32)
    return token, hash_refresh_token(token)


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
