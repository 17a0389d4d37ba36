"""Account routes: sign up, sign in, rotate and revoke tokens, who am I."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from gateway.accounts.models import LoginRequest, RefreshRequest, RegisterRequest, TokenPair, UserOut
from gateway.accounts.service import AccountService
from gateway.dependencies import AUTHENTICATED, provide_settings, services_of
from gateway.security import client_address
from gateway.settings import GatewaySettings
from gateway.tokens import Principal


def provide_accounts(state: State) -> AccountService:
    return services_of(state).accounts


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

    @post("/login", status_code=200, summary="Sign in: an access token (15 min) and a refresh token")
    async def login(
        self, data: LoginRequest, accounts: AccountService, request: Request[Any, Any, Any], settings: GatewaySettings
    ) -> TokenPair:
        return await accounts.login(data, client_address(request.scope, settings.trusted_proxy_set))

    @post("/refresh", status_code=200, summary="Rotate a refresh token for a new pair")
    async def refresh(self, data: RefreshRequest, accounts: AccountService) -> TokenPair:
        return await accounts.refresh(data.refresh_token)

    @post("/logout", status_code=HTTP_204_NO_CONTENT, summary="Revoke this login (its whole token family)")
    async def logout(self, data: RefreshRequest, accounts: AccountService) -> None:
        await accounts.logout(data.refresh_token)

    @get("/me", summary="The signed-in user", dependencies={"principal": AUTHENTICATED})
    async def me(self, principal: Principal, accounts: AccountService) -> UserOut:
        return await accounts.me(principal.user_id)
