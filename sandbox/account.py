"""Account summary endpoints: balances, fee settings, trading volume."""

from __future__ import annotations

from decimal import Decimal

from aiohttp import web

from .amounts import fmt
from .errors import SandboxError
from .ledger import Account
from .market import FEE_TIERS
from .recording import json_body

__all__ = ["get_balances", "get_fees", "get_trading_volume", "update_fees"]


async def get_balances(request: web.Request, account: Account) -> web.Response:
    return web.json_response(
        {
            "account_id": account.account_id,
            "balances": [balance.as_json() for balance in account.balances.values()],
        }
    )


def _fees(account: Account) -> dict[str, object]:
    reached = [tier for tier in FEE_TIERS if Decimal(tier["volume"]) <= account.trading_volume]
    return {
        "account_id": account.account_id,
        "running_trading_volume": fmt(account.trading_volume),
        "fee_group_id": "default",
        "collect_fees_in_best": account.collect_fees_in_best,
        "fee_discount_rate": "25.0",
        "minimum_price_value": "0.12",
        "fee_tiers": list(FEE_TIERS),
        "active_fee_tier": reached[-1],
    }


async def get_fees(request: web.Request, account: Account) -> web.Response:
    return web.json_response(_fees(account))


async def update_fees(request: web.Request, account: Account) -> web.Response:
    """Switch paying fees in BEST on or off; answers with the account's fee details."""
    choice = json_body(request).get("collect_fees_in_best")
    if not isinstance(choice, bool):
        raise SandboxError(400, "INVALID_QUERY")
    account.collect_fees_in_best = choice
    return web.json_response(_fees(account))


async def get_trading_volume(request: web.Request, account: Account) -> web.Response:
    return web.json_response({"volume": fmt(account.trading_volume.quantize(Decimal("1e-8")))})
