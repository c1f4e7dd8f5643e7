"""Answers the gateway gives itself on routes marked `local` (never forwarded): plain data
(status, headers, JSON body) that the edge frames and sends, after the route's steps ran."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import NamedTuple

from gateway.config.routes import KEY_INTROSPECTION
from gateway.http.errors import KeyInvalid, StoreUnavailable
from gateway.keys.introspection import describe_key
from gateway.pipeline.context import RequestContext
from gateway.store.errors import POSTGRES_ERRORS

__all__ = ["LOCAL_ANSWERS", "LocalAnswer", "answer_key_introspection"]


class LocalAnswer(NamedTuple):
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes  # JSON


async def answer_key_introspection(ctx: RequestContext) -> LocalAnswer:
    """`GET /gateway/v1/key`: the calling key as PostgreSQL has it. Reads `ctx.key` and the
    services' pool. Raises `StoreUnavailable` (503) when PostgreSQL does not answer, and
    `KeyInvalid` when the key was deleted since it was cached."""
    key = ctx.key
    assert key is not None
    try:
        described = await describe_key(ctx.services.pool, key.key_id)
    except POSTGRES_ERRORS as exc:
        raise StoreUnavailable from exc
    if described is None:
        raise KeyInvalid
    # Private to the key's holder: no cache keeps it.
    return LocalAnswer(200, (("Cache-Control", "no-store"),),
                       json.dumps(described, separators=(",", ":")).encode())


LOCAL_ANSWERS: Mapping[str, Callable[[RequestContext], Awaitable[LocalAnswer]]] = {
    KEY_INTROSPECTION: answer_key_introspection,
}
