"""Which account a request acts for: the gateway names it, the sandbox believes it."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from aiohttp import web

from .appkeys import EXCHANGE_KEY
from .errors import SandboxError
from .headers import ACCOUNT_HEADER
from .ledger import Account

__all__ = ["ACCOUNT_HEADER", "AccountHandler", "with_account"]

AccountHandler = Callable[[web.Request, Account], Awaitable[web.StreamResponse]]
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def with_account(handler: AccountHandler) -> _Handler:
    """Adapt an account handler: 401 MISSING_CREDENTIALS when no account is named."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        # The sandbox is not the gateway: it checks no key, it trusts this header.
        account_id = request.headers.get(ACCOUNT_HEADER, "").strip()
        if not account_id:
            raise SandboxError(401, "MISSING_CREDENTIALS")
        return await handler(request, request.app[EXCHANGE_KEY].account(account_id))

    return wrapper
