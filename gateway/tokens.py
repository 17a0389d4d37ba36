"""Access tokens (JWT, HS256, 15 min) and job-scoped SSE tickets; opaque refresh tokens."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt

from gateway.errors import Unauthorized
from gateway.settings import GatewaySettings

ALGORITHM = "HS256"
REQUIRED = ["exp", "iat", "sub", "iss", "aud"]
SSE_TICKET_SECONDS = 600


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    role: str

    @property
    def is_staff(self) -> bool:
        return self.role in ("teacher", "admin")


class TokenService:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self._key = settings.jwt_secret.encode()

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

    def access_token(self, user_id: str, role: str) -> str:
        return self._encode(
            {"sub": user_id, "role": role}, self.settings.jwt_audience, self.settings.access_token_seconds
        )

    def principal(self, token: str) -> Principal:
        claims = self._decode(token, self.settings.jwt_audience)
        return Principal(user_id=str(claims["sub"]), role=str(claims.get("role", "student")))

    def sse_ticket(self, user_id: str, job_id: str) -> str:
        """A short-lived token good for one job's event stream only (EventSource sends no headers)."""
        return self._encode({"sub": user_id, "job": job_id}, f"{self.settings.jwt_audience}:sse", SSE_TICKET_SECONDS)

    def ticket_job(self, ticket: str, job_id: str) -> str:
        claims = self._decode(ticket, f"{self.settings.jwt_audience}:sse")
        if claims.get("job") != job_id:
            raise Unauthorized("ticket is for another job")
        return str(claims["sub"])


def new_refresh_token() -> tuple[str, str]:
    """An opaque refresh token and the hash under which it is stored (never the token itself)."""
    token = secrets.token_urlsafe(32)
    return token, hash_refresh_token(token)


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
