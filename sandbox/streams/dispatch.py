"""What the sandbox does with each message a client sends on a stream.

``SUBSCRIBE``, ``UPDATE_SUBSCRIPTION``, ``UNSUBSCRIBE``, and on the ORDERS channel
``CREATE_ORDER`` and ``CANCEL_ORDER``. ``AUTHENTICATE`` is refused: the sandbox holds no keys,
the gateway authenticates and names the account on the upgrade request. Anything refused gets
a SYSTEM ERROR and the session stays open.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from ..clock import now
from ..ledger import Account
from .account_feed import snapshots
from .channels import PERMISSIONS, Subscription, parse_channel_names, parse_channels
from .hub import StreamHub
from .market_feed import parts_of, snapshot
from .messages import StreamError, error, subscriptions, unsubscribed
from .orders_channel import ORDERS, cancel_order, create_order
from .session import Identity, StreamSession

__all__ = ["AUTHENTICATE_REFUSAL", "handle_text"]

AUTHENTICATE_REFUSAL = (
    "The sandbox exchange holds no API keys: authenticate at the gateway, which names the "
    "account to the sandbox in X-Gateway-Account-Id."
)

_Handler = Callable[[StreamHub, StreamSession, dict[str, object]], None]


def _check_access(identity: Identity, name: str) -> None:
    """Private channels need the gateway to have named an account with the permission."""
    permission = PERMISSIONS.get(name)
    if permission is None:
        return
    if identity.account_id is None:
        raise StreamError("MISSING_CREDENTIALS", f"{name} needs an authenticated session")
    if not identity.may(permission):
        raise StreamError("MISSING_PERMISSION", f"{name} needs the '{permission}' permission")


def _account(hub: StreamHub, session: StreamSession) -> Account:
    account_id = session.identity.account_id
    assert account_id is not None  # checked by _check_access
    return hub.exchange.account(account_id)


def _authenticate(hub: StreamHub, session: StreamSession, message: dict[str, object]) -> None:
    # SECURITY: the token is not looked at, let alone checked: the sandbox is not the edge.
    raise StreamError("INVALID_APIKEY", AUTHENTICATE_REFUSAL)


def _snapshots(
    hub: StreamHub, session: StreamSession, sub: Subscription, old: Subscription | None
) -> list[dict[str, object]]:
    """What a (re)subscribed channel sends first: everything new, nothing already streaming."""
    if sub.name == "ACCOUNT_HISTORY":
        return [] if old is not None else snapshots(_account(hub, session), now())
    known = set(session.parts.get(sub.name, ())) if old is not None else set()
    moment = now()
    return [
        snapshot(part, hub.tick, moment, hub.interval)
        for part in parts_of(sub)
        if part not in known
    ]


def _subscribe_all(
    hub: StreamHub, session: StreamSession, message: dict[str, object], *, is_update: bool
) -> None:
    # All or nothing: every channel is checked before any is subscribed.
    requested = parse_channels(message.get("channels"))
    for sub in requested:
        _check_access(session.identity, sub.name)
    if any(sub.is_private for sub in requested):
        _account(hub, session)  # a new account is funded now, before its snapshot is taken
    first: list[dict[str, object]] = []
    for sub in requested:
        old = session.subscriptions.get(sub.name)
        first += _snapshots(hub, session, sub, old if is_update else None)
        session.subscribe(sub, parts_of(sub))
    kind = "SUBSCRIPTION_UPDATED" if is_update else "SUBSCRIPTIONS"
    session.send(subscriptions((sub.as_json() for sub in session.subscriptions.values()), kind))
    for item in first:
        session.send(item)


def _subscribe(hub: StreamHub, session: StreamSession, message: dict[str, object]) -> None:
    _subscribe_all(hub, session, message, is_update=False)


def _update_subscription(
    hub: StreamHub, session: StreamSession, message: dict[str, object]
) -> None:
    _subscribe_all(hub, session, message, is_update=True)


def _unsubscribe(hub: StreamHub, session: StreamSession, message: dict[str, object]) -> None:
    names = parse_channel_names(message.get("channels"))
    for name in names:
        session.unsubscribe(name)
    session.send(unsubscribed(names))


def _orders_account(hub: StreamHub, session: StreamSession) -> Account:
    _check_access(session.identity, ORDERS)
    if ORDERS not in session.subscriptions:
        raise StreamError("INVALID_SUBSCRIPTION", "subscribe to the ORDERS channel first")
    return _account(hub, session)


def _create_order(hub: StreamHub, session: StreamSession, message: dict[str, object]) -> None:
    session.send(create_order(_orders_account(hub, session), message))


def _cancel_order(hub: StreamHub, session: StreamSession, message: dict[str, object]) -> None:
    session.send(cancel_order(_orders_account(hub, session), message))


_HANDLERS: dict[str, _Handler] = {
    "AUTHENTICATE": _authenticate,
    "SUBSCRIBE": _subscribe,
    "UPDATE_SUBSCRIPTION": _update_subscription,
    "UNSUBSCRIBE": _unsubscribe,
    "CREATE_ORDER": _create_order,
    "CANCEL_ORDER": _cancel_order,
}


def handle_text(hub: StreamHub, session: StreamSession, text: str) -> None:
    """Act on one text message from the client; problems become a SYSTEM ERROR."""
    try:
        try:
            message = json.loads(text)
        except ValueError:
            raise StreamError("MALFORMED_JSON", "a message is one JSON object") from None
        if not isinstance(message, dict):
            raise StreamError("MALFORMED_JSON", "a message is one JSON object")
        kind = message.get("type")
        handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is None:
            raise StreamError("MALFORMED_JSON", f"unknown message type {kind!r}")
        handler(hub, session, message)
    except StreamError as exc:
        session.send(error(exc.code, exc.message))
