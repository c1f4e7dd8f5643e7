"""The in-process layer: a bounded TTL cache of key lookups, evicted on every invalidation.

A lookup that missed takes a `ticket` before it goes to Redis or PostgreSQL, and hands it back
with the result; if the key was invalidated in between, the result is dropped rather than
cached, so a refill racing a delete cannot bring the key back.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from gateway.store.base import KeyRecord

__all__ = ["MISS", "MemoryCache", "Miss", "Ticket"]


class Miss:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISS"


MISS = Miss()  # not cached at all (distinct from a cached "no such key", which is None)


@dataclass(frozen=True, slots=True)
class Ticket:
    key_id: str
    generation: int


class MemoryCache:
    """Key id -> (record or None, expiry). Not thread-safe: one per event loop."""

    __slots__ = ("_entries", "_floor", "_generation", "_invalidated", "_max_size",
                 "_negative_ttl", "_stale_ttl", "_ttl", "hits", "misses")

    def __init__(
        self, ttl: float, negative_ttl: float, stale_ttl: float, max_size: int = 100_000
    ) -> None:
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._stale_ttl = stale_ttl
        self._max_size = max_size
        # value: (record, fresh_until, usable_until)
        self._entries: OrderedDict[str, tuple[KeyRecord | None, float, float]] = OrderedDict()
        self._generation = 0
        self._floor = 0  # tickets older than this were taken before a clear()
        # key id -> generation at which it was last invalidated (bounded like the entries)
        self._invalidated: OrderedDict[str, int] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key_id: str) -> KeyRecord | Miss | None:
        """The cached answer while fresh, else MISS. No I/O, no await."""
        entry = self._entries.get(key_id)
        if entry is not None and entry[1] > time.monotonic():
            self.hits += 1
            return entry[0]
        self.misses += 1
        return MISS

    def get_stale(self, key_id: str) -> KeyRecord | Miss | None:
        """An expired positive answer within the stale bound (store down), else MISS."""
        entry = self._entries.get(key_id)
        if entry is not None and entry[0] is not None and entry[2] > time.monotonic():
            return entry[0]
        return MISS

    def ticket(self, key_id: str) -> Ticket:
        return Ticket(key_id, self._generation)

    def is_current(self, ticket: Ticket) -> bool:
        """False once the key was invalidated (or everything cleared) after `ticket`."""
        return not (ticket.generation < self._floor
                    or self._invalidated.get(ticket.key_id, -1) >= ticket.generation)

    def fill(self, ticket: Ticket, record: KeyRecord | None) -> bool:
        """Cache a loaded answer unless the key was invalidated since `ticket` was taken."""
        if not self.is_current(ticket):
            return False
        now = time.monotonic()
        ttl = self._ttl if record is not None else self._negative_ttl
        stale = self._stale_ttl if record is not None else ttl
        self._entries[ticket.key_id] = (record, now + ttl, now + max(ttl, stale))
        self._entries.move_to_end(ticket.key_id)
        while len(self._entries) > self._max_size:
            self._entries.popitem(last=False)
        return True

    def invalidate(self, key_id: str) -> None:
        """Forget a key now, and refuse any fill whose lookup started before this."""
        self._entries.pop(key_id, None)
        self._invalidated[key_id] = self._generation
        self._invalidated.move_to_end(key_id)
        self._generation += 1
        while len(self._invalidated) > self._max_size:
            # Forgetting when a key was invalidated must not let an older ticket refill it:
            # refuse every ticket that old.
            _, generation = self._invalidated.popitem(last=False)
            self._floor = max(self._floor, generation + 1)

    def clear(self) -> None:
        """Forget everything (an invalidation channel reconnected: messages may have been lost)."""
        self._entries.clear()
        self._invalidated.clear()
        self._generation += 1
        # Lookups in flight hold older generations: refuse all of them.
        self._floor = self._generation

    def __len__(self) -> int:
        return len(self._entries)
