"""Accounts' HTTP request and response bodies (camelCase JSON). Separate from storage."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

Email = Annotated[str, Meta(pattern=r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{2,63}$", max_length=254)]
Password = Annotated[str, Meta(min_length=8, max_length=256)]
Level = Literal["kids", "teens", "adults"]


class RegisterRequest(Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    email: Email
    password: Password
    display_name: Annotated[str, Meta(min_length=1, max_length=80)]
    # Students are grouped in levels by age.
    level: Level


class LoginRequest(Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    email: Annotated[str, Meta(max_length=254)]
    password: Annotated[str, Meta(max_length=256)]


class RefreshRequest(Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    refresh_token: Annotated[str, Meta(min_length=1, max_length=256)]


class TokenPair(Struct, frozen=True, kw_only=True, rename="camel"):
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "Bearer"


class UserOut(Struct, frozen=True, kw_only=True, rename="camel"):
    id: str
    email: str
    display_name: str
    level: str
    role: str
