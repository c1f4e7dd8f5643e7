"""When the gateway may believe what Redis holds for a key, and what Redis needs repairing.

Redis holds copies. A copy goes stale when its key changes and the change could not be
written to Redis (the deleter could not reach it, or Redis was down and came back with its
old data). Two ways this process learns that a copy may be stale:

* PostgreSQL's NOTIFY names a key that changed (`distrust`): the deleter's own Redis write
  may have failed, so Redis is not read for that key until this process has repaired it;
* this process lost touch with Redis or with an invalidation channel, or just started
  (`quarantine(since)`): every key changed since then may have a stale copy, so Redis is not
  read at all until keys changed since then are repaired.

Either lapses by itself once every copy written before it has expired (the record TTL plus
a margin), so a repair that cannot run (PostgreSQL down) does not shut Redis out for good.
No I/O here: `gateway.store.repair` does the repairing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import NamedTuple

__all__ = ["RedisTrust", "RepairPlan"]

_MAX_KEYS = 100_000  # distrusted keys remembered; past it, lapsed ones are dropped first


class RepairPlan(NamedTuple):
    """What one repair pass must cover, with the generations that tell it what it covered."""

    keys: dict[str, int]  # key id -> generation of its latest distrust
    since: float | None  # unix time: every key changed since then, when quarantined
    generation: int  # of the quarantine (0: none)


class RedisTrust:
    """Distrusted keys and the quarantine, each with the time it lapses by itself."""

    __slots__ = ("_clock", "_generation", "_keys", "_lapse", "_quarantine", "_since",
                 "_until", "wanted")

    def __init__(self, lapse: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._lapse = lapse
        self._clock = clock
        self._generation = 0
        self._keys: dict[str, tuple[int, float]] = {}  # key id -> (generation, lapses at)
        self._since: float | None = None
        self._until = 0.0
        self._quarantine = 0  # generation of the current quarantine
        self.wanted = asyncio.Event()  # set while something waits for a repair

    def distrust(self, key_id: str) -> None:
        """`key_id` changed: do not read its Redis copy until it is repaired (or lapses)."""
        self._generation += 1
        if len(self._keys) >= _MAX_KEYS:
            now = self._clock()
            self._keys = {k: v for k, v in self._keys.items() if v[1] > now}
        self._keys[key_id] = (self._generation, self._clock() + self._lapse)
        self.wanted.set()

    def quarantine(self, since: float) -> None:
        """Changes since `since` (unix time) may be missing from Redis: read none of it."""
        self._generation += 1
        self._quarantine = self._generation
        self._since = since if self._since is None else min(self._since, since)
        self._until = self._clock() + self._lapse
        self.wanted.set()

    @property
    def is_quarantined(self) -> bool:
        if self._since is not None and self._clock() >= self._until:
            self._since = None  # every copy from before it has expired in Redis by now
        return self._since is not None

    def is_trusted(self, key_id: str) -> bool:
        """May Redis be read (and filled) for this key now?"""
        if self._since is not None and self.is_quarantined:
            return False
        entry = self._keys.get(key_id)
        if entry is None:
            return True
        if self._clock() < entry[1]:
            return False
        del self._keys[key_id]
        return True

    def plan(self) -> RepairPlan | None:
        """What a repair pass should cover now, or None when nothing waits for one."""
        quarantined = self.is_quarantined
        if not self._keys and not quarantined:
            self.wanted.clear()
            return None
        return RepairPlan(dict((k, g) for k, (g, _) in self._keys.items()),
                          self._since if quarantined else None,
                          self._quarantine if quarantined else 0)

    def repaired(self, plan: RepairPlan) -> None:
        """`plan` was carried out: trust what it covered, unless it changed again since."""
        for key_id, generation in plan.keys.items():
            entry = self._keys.get(key_id)
            if entry is not None and entry[0] == generation:
                del self._keys[key_id]
        if plan.generation and plan.generation == self._quarantine:
            self._since = None
        if not self._keys and self._since is None:
            self.wanted.clear()
