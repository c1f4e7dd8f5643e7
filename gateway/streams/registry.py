"""The live stream sessions of one process, by key and by client address.

The caps (sessions per key, per client address) are counted here, and a key's invalidation
(deleted, rolled, changed: the same message that evicts it from the key cache) reaches its
sessions here: each checks its key again against the store, and ends if it no longer
passes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Generic, Protocol, TypeVar

from gateway.store.base import KeyRecord

__all__ = ["Registered", "SessionRegistry"]


class Registered(Protocol):
    """A live session as the registry counts, rechecks and ends it (`Registered`)."""

    key: KeyRecord | None
    ip_text: str
    transport: asyncio.Transport

    def end(self, code: str, message: str | None = None, close_code: int | None = None,
            kind: str = "SESSION") -> None: ...

    async def recheck(self, *, is_changed: bool) -> None: ...


S = TypeVar("S", bound=Registered)


class SessionRegistry(Generic[S]):
    """Sessions by key id and counts by client address; told of every invalidated key."""

    def __init__(self, max_per_key: int, max_per_ip: int,
                 spawn: Callable[[Coroutine[Any, Any, None]], None]) -> None:
        self.max_per_key = max_per_key
        self.max_per_ip = max_per_ip
        self._spawn = spawn
        self.sessions: set[S] = set()
        self._by_key: dict[str, set[S]] = {}
        self._by_ip: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.sessions)

    # --- caps ----------------------------------------------------------------------------

    def may_open(self, ip_text: str) -> bool:
        """Room for one more session from this client address."""
        return self._by_ip.get(ip_text, 0) < self.max_per_ip

    def may_hold(self, session: S, key_id: str) -> bool:
        """Room for `session` among the sessions of this key (itself not counted twice)."""
        held = self._by_key.get(key_id, set())
        return session in held or len(held) < self.max_per_key

    # --- membership ----------------------------------------------------------------------

    def add(self, session: S) -> None:
        self.sessions.add(session)
        self._by_ip[session.ip_text] = self._by_ip.get(session.ip_text, 0) + 1

    def keyed(self, session: S, previous: KeyRecord | None,
              key: KeyRecord) -> None:
        """`session` now holds `key` (and no longer `previous`)."""
        if previous is not None and previous.key_id != key.key_id:
            self._unkey(session, previous.key_id)
        self._by_key.setdefault(key.key_id, set()).add(session)

    def remove(self, session: S) -> None:
        if session not in self.sessions:
            return
        self.sessions.discard(session)
        left = self._by_ip.get(session.ip_text, 1) - 1
        if left > 0:
            self._by_ip[session.ip_text] = left
        else:
            self._by_ip.pop(session.ip_text, None)
        if session.key is not None:
            self._unkey(session, session.key.key_id)

    def _unkey(self, session: S, key_id: str) -> None:
        held = self._by_key.get(key_id)
        if held is not None:
            held.discard(session)
            if not held:
                del self._by_key[key_id]

    def of_key(self, key_id: str) -> list[S]:
        return list(self._by_key.get(key_id, ()))

    # --- invalidation --------------------------------------------------------------------

    def key_invalidated(self, key_id: str) -> None:
        """A key changed somewhere in the cluster (called after the key cache forgot it)."""
        for session in self.of_key(key_id):
            self._spawn(session.recheck(is_changed=True))

    def keys_reset(self) -> None:
        """An invalidation channel reconnected: messages may have been missed, so every
        session's key is checked again (a store that cannot answer keeps them, as it keeps
        cached keys working for REST)."""
        for held in list(self._by_key.values()):
            for session in list(held):
                self._spawn(session.recheck(is_changed=False))

    def close_all(self, code: int, reason: str) -> None:
        for session in list(self.sessions):
            session.end("", reason, code)

    def abort_all(self) -> None:
        for session in list(self.sessions):
            session.transport.abort()

