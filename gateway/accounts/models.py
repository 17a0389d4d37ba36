"""Accounts' HTTP request and response bodies (camelCase JSON). Separate from storage."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

# Patterns mean the same in Python's re (which validates) and ECMA-262 (JSON Schema's dialect, which
# clients and fuzzers read): no \p{..}, and \s widened to the union of both dialects' spaces.
# Hidden: controls, line and paragraph separators, bidirectional-formatting marks (text that reads
# otherwise than it is stored).
HIDDEN = r"\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
# Spaces, zero-width ones included: a name of nothing else is blank.
SPACES = r"\s\x85\xa0\ufeff\u200b-\u200d\u2060"
VISIBLE = rf"[^{SPACES}{HIDDEN}]"
_PART = rf"[^@{SPACES}{HIDDEN}]"
_OUTER = r"[\t\n\x0b\x0c\r ]*"
Email = Annotated[str, Meta(pattern=rf"^{_PART}{{1,64}}@{_PART}{{1,255}}\.{_PART}{{2,63}}$", max_length=254)]
DisplayName = Annotated[
    str,
    Meta(
        # Outer spaces, tabs and line ends are allowed: the name is stripped before it is kept.
        pattern=rf"^{_OUTER}[^{HIDDEN}]*{VISIBLE}[^{HIDDEN}]*{_OUTER}$",
        max_length=80,
        description="Shown to others: something visible, no control or bidirectional-formatting characters",
    ),
]
Password = Annotated[str, Meta(min_length=8, max_length=256)]
Level = Literal["kids", "teens", "adults"]


class RegisterRequest(Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    email: Email
    password: Password
    display_name: DisplayName
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
