"""Deposits and withdrawals: addresses, fiat deposit details, payouts and their history."""

from __future__ import annotations

import re
from decimal import Decimal

from aiohttp import web

from .amounts import decimals_of, fmt, parse_decimal
from .clock import now
from .errors import SandboxError
from .ledger import Account, is_uuid
from .market import FIAT, Currency, currency
from .paging import HistoryQuery
from .recording import json_body
from .records import Transfer

__all__ = [
    "create_deposit_address",
    "get_deposit_address",
    "get_fiat_deposit_details",
    "list_deposits",
    "list_internal_deposits",
    "list_internal_withdrawals",
    "list_withdrawals",
    "withdraw_crypto",
    "withdraw_fiat",
]


# Addresses and tags are echoed back and kept in the history: only the characters of real
# ones (base58, bech32, hex, and the ':' of prefixed forms) are accepted.
_ADDRESS = re.compile(r"[A-Za-z0-9:]{1,128}")
_DESTINATION_TAG = re.compile(r"[A-Za-z0-9]{0,64}")


def _crypto(code: object) -> Currency:
    found = currency(code)
    if found.code in FIAT:
        raise SandboxError(400, "INVALID_CURRENCY")
    return found


def _fiat(code: object) -> Currency:
    found = currency(code)
    if found.code not in FIAT:
        raise SandboxError(400, "INVALID_CURRENCY")
    return found


async def get_deposit_address(request: web.Request, account: Account) -> web.Response:
    code = _crypto(request.match_info["currency_code"]).code
    address = account.addresses.get(code)
    if address is None:
        raise SandboxError(404, "NOT_FOUND")
    return web.json_response(address.as_json(can_create_more=False))


async def create_deposit_address(request: web.Request, account: Account) -> web.Response:
    code = _crypto(json_body(request).get("currency")).code
    address = account.create_address(code)
    return web.json_response(address.as_json(can_create_more=False), status=201)


async def get_fiat_deposit_details(request: web.Request, account: Account) -> web.Response:
    # Obviously fake bank details: nobody should ever wire money to a sandbox.
    return web.json_response(
        {
            "bank_name": "Sandbox Bank",
            "iban": "XX00 SAND BOX0 0000 0000 00",
            "bic": "SANDXXXXXXX",
            "address": "1 Example Street, 0000 Nowhere",
            "receiver_name": "Sandbox Exchange",
            "receiver_address": "1 Example Street, 0000 Nowhere",
            "unique_id": account.account_id,
        }
    )


def _amount(body: dict[str, object], item: Currency) -> Decimal:
    amount = parse_decimal(body.get("amount"), "INVALID_AMOUNT", "NEGATIVE_AMOUNT")
    if decimals_of(amount) > item.precision:
        raise SandboxError(400, "BAD_AMOUNT_PRECISION")
    return amount


def _recipient(body: dict[str, object]) -> tuple[str, str]:
    """The body's ``recipient``: its address, and its destination tag ("" if none)."""
    recipient = body.get("recipient")
    address = recipient.get("address") if isinstance(recipient, dict) else None
    tag = recipient.get("destination_tag", "") if isinstance(recipient, dict) else ""
    if not isinstance(address, str) or not _ADDRESS.fullmatch(address):
        raise SandboxError(400, "INVALID_ADDRESS")
    if tag is None:
        tag = ""
    if not isinstance(tag, str) or not _DESTINATION_TAG.fullmatch(tag):
        raise SandboxError(400, "INVALID_DESTINATION_TAG")
    return address, tag


async def withdraw_crypto(request: web.Request, account: Account) -> web.Response:
    """Pay crypto out to ``recipient``; the answer names the amount, the fee taken on top of
    it, and the transaction."""
    body = json_body(request)
    item = _crypto(body.get("currency"))
    amount = _amount(body, item)
    address, tag = _recipient(body)
    transfer = account.withdraw(
        item.code, amount, now(), recipient=address, destination_tag=tag or None
    )
    return web.json_response(
        {
            "amount": fmt(transfer.amount),
            "fee": fmt(transfer.fee_amount),
            "recipient": address,
            "destination_tag": tag,
            "transaction_id": transfer.transaction_id,
        },
        status=201,
    )


async def withdraw_fiat(request: web.Request, account: Account) -> web.Response:
    body = json_body(request)
    item = _fiat(body.get("currency"))
    amount = _amount(body, item)
    payout_account_id = body.get("payout_account_id")
    if not (isinstance(payout_account_id, str) and is_uuid(payout_account_id)):
        raise SandboxError(400, "INVALID_PAYOUT_ACCOUNT")
    transfer = account.withdraw(item.code, amount, now(), recipient=None, destination_tag=None)
    return web.json_response({"transaction_id": transfer.transaction_id}, status=201)


def _history(
    request: web.Request, key: str, transfers: list[Transfer], *, internal: bool
) -> web.Response:
    query = HistoryQuery.parse(request.query)
    code = request.query.get("currency_code")
    if code is not None:
        code = currency(code).code
    source = "INTERNAL" if internal else None
    selected = [
        transfer
        for transfer in reversed(transfers)
        if (code is None or transfer.currency == code)
        and (source is None or transfer.funds_source == source)
        and query.covers(transfer.time)
    ]
    return web.json_response(query.page(key, selected, Transfer.as_json))


async def list_deposits(request: web.Request, account: Account) -> web.Response:
    return _history(request, "deposit_history", account.deposits, internal=False)


async def list_internal_deposits(request: web.Request, account: Account) -> web.Response:
    """Deposits from the exchange's sister retail platform (none happen in the sandbox)."""
    return _history(request, "deposit_history", account.deposits, internal=True)


async def list_withdrawals(request: web.Request, account: Account) -> web.Response:
    return _history(request, "withdrawal_history", account.withdrawals, internal=False)


async def list_internal_withdrawals(request: web.Request, account: Account) -> web.Response:
    """Withdrawals to the exchange's sister retail platform (none happen in the sandbox)."""
    return _history(request, "withdrawal_history", account.withdrawals, internal=True)
