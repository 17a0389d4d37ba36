"""Account routes: sign up, sign in, rotate and revoke tokens, who am I.

Browsers keep the access token in memory only and get their refresh token as an HttpOnly cookie
(``cr_refresh``), which page scripts cannot read; API clients keep using the JSON bodies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie, State
from litestar.di import Provide
from litestar.openapi.spec import OpenAPIResponse, Operation, RequestBody
from litestar.params import CookieParameter, HeaderParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from gateway.accounts.models import LoginRequest, RefreshRequest, RegisterRequest, TokenPair, UserOut
from gateway.accounts.service import AccountService
from gateway.dependencies import AUTHENTICATED, provide_settings, services_of
from gateway.errors import Unauthorized
from gateway.security import client_address
from gateway.settings import GatewaySettings
from gateway.tokens import Principal

REFRESH_COOKIE = "cr_refresh"
# Only the refresh and logout routes need it: the browser sends it nowhere else.
REFRESH_COOKIE_PATH = "/auth"
CSRF_HEADER = "X-Requested-With"
CSRF_HEADER_VALUE = "coderunner"

_COOKIE_DOC = (
    f"The refresh token as an HttpOnly cookie for browsers: `{REFRESH_COOKIE}=<token>; HttpOnly; "
    f"SameSite=Strict; Path={REFRESH_COOKIE_PATH}; Max-Age=<REFRESH_TOKEN_DAYS in seconds>` and `Secure` "
    "unless APP_ENV is development."
)
_CLEARED_DOC = f"`{REFRESH_COOKIE}=; Max-Age=0; Path={REFRESH_COOKIE_PATH}`: the browser drops the refresh cookie."
# OpenAPI only (the headers are written by ``_set_cookie``): its example shows these attributes.
_DOCUMENTED_COOKIE = Cookie(
    key=REFRESH_COOKIE,
    value="<refresh token>",
    path=REFRESH_COOKIE_PATH,
    httponly=True,
    samesite="strict",
    description=_COOKIE_DOC,
    documentation_only=True,
)
_DOCUMENTED_CLEARED = Cookie(
    key=REFRESH_COOKIE,
    value="",
    max_age=0,
    path=REFRESH_COOKIE_PATH,
    httponly=True,
    samesite="strict",
    description=_CLEARED_DOC,
    documentation_only=True,
)
_SOURCE_DOC = (
    "The refresh token comes from the JSON body (`{refreshToken}`) or, when there is no body, from the "
    f"`{REFRESH_COOKIE}` cookie; the cookie counts only with the header `{CSRF_HEADER}: {CSRF_HEADER_VALUE}` "
    "(otherwise 401)."
)
RefreshCookie = Annotated[
    str | None,
    CookieParameter(name=REFRESH_COOKIE, description=f"Counts only without a body, and only with {CSRF_HEADER}."),
]
RequestedWith = Annotated[
    str | None,
    HeaderParameter(
        name=CSRF_HEADER,
        description=f"Must be `{CSRF_HEADER_VALUE}` for the {REFRESH_COOKIE} cookie to count (a CSRF guard).",
    ),
]


@dataclass
class OptionalBodyOperation(Operation):
    """Litestar documents every request body as required; these routes' bodies are optional."""

    def __post_init__(self) -> None:
        if isinstance(self.request_body, RequestBody):
            self.request_body.required = False
        # A handler returning Response[None] is documented with a JSON body; a 204 has none.
        no_content = (self.responses or {}).get("204")
        if isinstance(no_content, OpenAPIResponse):
            no_content.content = None


def provide_accounts(state: State) -> AccountService:
    return services_of(state).accounts


def cookie_request_allowed(requested_with: str | None) -> bool:
    """May this request use the refresh cookie? A guard on top of SameSite=Strict.

    A form cannot set a custom header, and a script on another origin would need a credentialed CORS
    preflight, which the gateway never grants, so the header shows the request comes from our page.
    """
    return requested_with == CSRF_HEADER_VALUE


def _set_cookie(settings: GatewaySettings, value: str, max_age: int) -> str:
    # Written by hand rather than with litestar's Cookie, which spells the attribute "SameSite=strict".
    # Secure everywhere but development: browsers drop Secure cookies sent over http://127.0.0.1.
    secure = "; Secure" if settings.app_env != "development" else ""
    return f"{REFRESH_COOKIE}={value}; Max-Age={max_age}; Path={REFRESH_COOKIE_PATH}; HttpOnly; SameSite=Strict{secure}"


def refresh_cookie(settings: GatewaySettings, token: str) -> dict[str, str]:
    """The header that hands ``token`` to the browser for as long as the token lives."""
    return {"Set-Cookie": _set_cookie(settings, token, settings.refresh_token_days * 86_400)}


def cleared_cookie(settings: GatewaySettings) -> dict[str, str]:
    return {"Set-Cookie": _set_cookie(settings, "", 0)}


def _refresh_token(data: RefreshRequest | None, cookie: str | None, requested_with: str | None) -> str:
    """The body's token when there is a body; otherwise the cookie's, if the guard lets it count."""
    if data is not None:
        return data.refresh_token
    if not cookie:
        raise Unauthorized(f"no refresh token: send {{refreshToken}} or the {REFRESH_COOKIE} cookie")
    if not cookie_request_allowed(requested_with):
        raise Unauthorized(f"the {REFRESH_COOKIE} cookie needs the header {CSRF_HEADER}: {CSRF_HEADER_VALUE}")
    return cookie


class AuthController(Controller):
    path = "/auth"
    tags = ["auth"]
    dependencies = {
        "accounts": Provide(provide_accounts, sync_to_thread=False),
        "settings": Provide(provide_settings, sync_to_thread=False),
    }

    @post("/register", status_code=HTTP_201_CREATED, summary="Create an account")
    async def register(self, data: RegisterRequest, accounts: AccountService) -> UserOut:
        return await accounts.register(data)

    @post(
        "/login",
        status_code=200,
        summary="Sign in: an access token (15 min) and a refresh token",
        description=f"Also sets the `{REFRESH_COOKIE}` cookie for browsers.",
        response_cookies=[_DOCUMENTED_COOKIE],
    )
    async def login(
        self, data: LoginRequest, accounts: AccountService, request: Request[Any, Any, Any], settings: GatewaySettings
    ) -> Response[TokenPair]:
        pair = await accounts.login(data, client_address(request.scope, settings.trusted_proxy_set))
        return Response(pair, headers=refresh_cookie(settings, pair.refresh_token))

    @post(
        "/refresh",
        status_code=200,
        summary="Rotate a refresh token for a new pair",
        description=f"{_SOURCE_DOC} The new refresh token is also set as the cookie. Reusing a rotated token, "
        "from either place, revokes its whole login.",
        response_cookies=[_DOCUMENTED_COOKIE],
        operation_class=OptionalBodyOperation,
    )
    async def refresh(
        self,
        accounts: AccountService,
        settings: GatewaySettings,
        cr_refresh: RefreshCookie = None,
        requested_with: RequestedWith = None,
        data: RefreshRequest | None = None,
    ) -> Response[TokenPair]:
        token = _refresh_token(data, cr_refresh, requested_with)
        try:
            pair = await accounts.refresh(token)
        except Unauthorized as exc:
            if data is not None:
                raise
            # A dead cookie is of no use to the browser: drop it rather than resend it for weeks.
            raise Unauthorized(exc.detail, headers=cleared_cookie(settings)) from None
        return Response(pair, headers=refresh_cookie(settings, pair.refresh_token))

    @post(
        "/logout",
        status_code=HTTP_204_NO_CONTENT,
        summary="Revoke this login (its whole token family)",
        description=f"{_SOURCE_DOC} A 204 always clears the cookie.",
        response_cookies=[_DOCUMENTED_CLEARED],
        operation_class=OptionalBodyOperation,
    )
    async def logout(
        self,
        accounts: AccountService,
        settings: GatewaySettings,
        cr_refresh: RefreshCookie = None,
        requested_with: RequestedWith = None,
        data: RefreshRequest | None = None,
    ) -> Response[None]:
        await accounts.logout(_refresh_token(data, cr_refresh, requested_with))
        return Response(None, status_code=HTTP_204_NO_CONTENT, headers=cleared_cookie(settings))

    @get("/me", summary="The signed-in user", dependencies={"principal": AUTHENTICATED})
    async def me(self, principal: Principal, accounts: AccountService) -> UserOut:
        return await accounts.me(principal.user_id)
