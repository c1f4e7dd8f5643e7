"""The ORDERS channel: orders placed and cancelled over the stream, as REST POST/DELETE do.

``{"type": "CREATE_ORDER", "order": {...}}`` takes the body of POST /account/orders and answers
``ORDER_CREATED`` with the order, or ``ORDER_CREATION_FAILED`` with the REST error code.
``{"type": "CANCEL_ORDER", "order_id": ...}`` (or ``"client_id"``) answers
``ORDER_SUBMITTED_FOR_CANCELLATION`` naming the order as asked, or ``ORDER_CANCELLATION_FAILED``.
"""

from __future__ import annotations

from ..clock import now
from ..errors import SandboxError
from ..ledger import Account
from ..trading import parse_order_request
from .messages import on_channel

__all__ = ["ORDERS", "cancel_order", "create_order"]

ORDERS = "ORDERS"


def create_order(account: Account, message: dict[str, object]) -> dict[str, object]:
    body = message.get("order")
    client_id = body.get("client_id") if isinstance(body, dict) else None
    try:
        if not isinstance(body, dict):
            raise SandboxError(400, "INVALID_QUERY")
        order = account.place(parse_order_request(body), now())
    except SandboxError as exc:
        failed: dict[str, object] = {"error": exc.code}
        if isinstance(client_id, str):
            failed["client_id"] = client_id
        return on_channel(failed, ORDERS, "ORDER_CREATION_FAILED")
    return on_channel({"order": order.as_json()}, ORDERS, "ORDER_CREATED")


def cancel_order(account: Account, message: dict[str, object]) -> dict[str, object]:
    order_id, client_id = message.get("order_id"), message.get("client_id")
    named: dict[str, object] = (
        {"order_id": order_id} if order_id is not None else {"client_id": client_id}
    )
    try:
        if isinstance(order_id, str):
            order = account.order(order_id)
        elif order_id is None and isinstance(client_id, str):
            order = account.order_by_client_id(client_id)
        elif order_id is None and client_id is not None:
            raise SandboxError(400, "INVALID_CLIENT_UUID")
        else:
            raise SandboxError(400, "INVALID_ORDER_ID")
        account.cancel(order, now())
    except SandboxError as exc:
        return on_channel({"error": exc.code, **named}, ORDERS, "ORDER_CANCELLATION_FAILED")
    return on_channel(named, ORDERS, "ORDER_SUBMITTED_FOR_CANCELLATION")
