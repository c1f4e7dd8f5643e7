"""The in-process key cache (gateway/store/memory.py): TTLs, negative caching, refill races."""

from __future__ import annotations

import time

import pytest

from gateway.store.base import KeyRecord
from gateway.store.memory import MISS, MemoryCache

LONG = 60.0
SHORT = 0.05
PAST_SHORT = 0.15  # sleep this long to be past SHORT with room for a slow machine


def record(key_id: str = "aaaaaaaaaaaaaaaa") -> KeyRecord:
    return KeyRecord(key_id=key_id, account_id=7, permissions=frozenset({"read"}),
                     allowed_ips=(), secret_hash=b"\x00" * 32, hash_version=1)


def cache(ttl: float = LONG, negative_ttl: float = LONG, stale_ttl: float = LONG,
          max_size: int = 100) -> MemoryCache:
    return MemoryCache(ttl=ttl, negative_ttl=negative_ttl, stale_ttl=stale_ttl,
                       max_size=max_size)


def test_empty_cache_misses() -> None:
    c = cache()
    assert c.get("k") is MISS
    assert c.get_stale("k") is MISS
    assert (c.hits, c.misses) == (0, 1)
    assert repr(MISS) == "MISS"


def test_fill_then_hit() -> None:
    c = cache()
    rec = record("k")
    assert c.fill(c.ticket("k"), rec)
    assert c.get("k") is rec
    assert (c.hits, c.misses) == (1, 0)
    assert len(c) == 1


def test_positive_entry_expires_after_ttl() -> None:
    c = cache(ttl=SHORT)
    c.fill(c.ticket("k"), record("k"))
    assert c.get("k") is not MISS
    time.sleep(PAST_SHORT)
    assert c.get("k") is MISS


def test_negative_caching_answers_none_until_its_own_ttl() -> None:
    c = cache(ttl=LONG, negative_ttl=SHORT)
    assert c.fill(c.ticket("nope"), None)
    assert c.get("nope") is None  # cached "no such key", not a miss
    time.sleep(PAST_SHORT)
    assert c.get("nope") is MISS


def test_negative_ttl_does_not_shorten_positive_entries() -> None:
    c = cache(ttl=LONG, negative_ttl=SHORT)
    c.fill(c.ticket("k"), record("k"))
    time.sleep(PAST_SHORT)
    assert c.get("k") is not MISS


def test_fill_whose_ticket_predates_an_invalidate_is_refused() -> None:
    c = cache()
    ticket = c.ticket("k")  # a lookup starts...
    c.invalidate("k")  # ...the key is deleted meanwhile...
    assert not c.fill(ticket, record("k"))  # ...and the stale answer must not come back
    assert c.get("k") is MISS
    # A lookup that starts after the delete may cache its (negative) answer.
    assert c.fill(c.ticket("k"), None)
    assert c.get("k") is None


def test_invalidate_of_another_key_does_not_refuse_a_fill() -> None:
    c = cache()
    ticket = c.ticket("k")
    c.invalidate("other")
    assert c.fill(ticket, record("k"))


def test_refill_race_survives_forgetting_old_invalidations() -> None:
    # Invalidation records are bounded like entries; losing one must not reopen the race.
    c = cache(max_size=2)
    ticket = c.ticket("k")
    c.invalidate("k")
    for i in range(5):
        c.invalidate(f"other{i}")
    assert not c.fill(ticket, record("k"))
    assert c.get("k") is MISS


def test_invalidate_evicts_at_once() -> None:
    c = cache()
    c.fill(c.ticket("k"), record("k"))
    c.invalidate("k")
    assert c.get("k") is MISS
    assert c.get_stale("k") is MISS
    assert len(c) == 0


def test_clear_refuses_every_older_ticket() -> None:
    c = cache()
    old_a, old_b = c.ticket("a"), c.ticket("b")
    c.fill(c.ticket("c"), record("c"))
    c.clear()
    assert len(c) == 0 and c.get("c") is MISS
    assert not c.fill(old_a, record("a"))
    assert not c.fill(old_b, None)
    assert c.fill(c.ticket("a"), record("a"))


def test_size_bound_evicts_the_oldest() -> None:
    c = cache(max_size=3)
    for key in ["a", "b", "c", "d"]:
        assert c.fill(c.ticket(key), record(key))
    assert len(c) == 3
    assert c.get("a") is MISS
    assert all(c.get(key) is not MISS for key in ["b", "c", "d"])
    # A refill makes an entry the newest again.
    c.fill(c.ticket("b"), record("b"))
    c.fill(c.ticket("e"), record("e"))
    assert c.get("c") is MISS
    assert c.get("b") is not MISS


def test_get_stale_serves_expired_positive_entries_within_the_bound() -> None:
    c = cache(ttl=SHORT, stale_ttl=LONG)
    rec = record("k")
    c.fill(c.ticket("k"), rec)
    time.sleep(PAST_SHORT)
    assert c.get("k") is MISS
    assert c.get_stale("k") is rec


def test_get_stale_stops_at_the_stale_bound() -> None:
    c = cache(ttl=0.01, stale_ttl=SHORT)
    c.fill(c.ticket("k"), record("k"))
    time.sleep(PAST_SHORT)
    assert c.get_stale("k") is MISS


def test_get_stale_never_serves_a_negative_entry() -> None:
    c = cache(negative_ttl=LONG)
    c.fill(c.ticket("nope"), None)
    assert c.get("nope") is None
    assert c.get_stale("nope") is MISS


@pytest.mark.parametrize("stale_ttl", [0.0, 0.01])
def test_stale_bound_shorter_than_ttl_keeps_the_fresh_answer(stale_ttl: float) -> None:
    c = cache(ttl=LONG, stale_ttl=stale_ttl)
    rec = record("k")
    c.fill(c.ticket("k"), rec)
    time.sleep(0.05)
    assert c.get("k") is rec
    assert c.get_stale("k") is rec
