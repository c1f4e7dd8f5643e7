"""When Redis is believed: distrusted keys, the quarantine, their repair and their lapse."""

from __future__ import annotations

from gateway.store.trust import RedisTrust


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_everything_is_trusted_until_told_otherwise() -> None:
    trust = RedisTrust(lapse=60, clock=Clock())
    assert trust.is_trusted("a") and not trust.is_quarantined
    assert trust.plan() is None and not trust.wanted.is_set()


def test_a_distrusted_key_waits_for_its_repair() -> None:
    trust = RedisTrust(lapse=60, clock=Clock())
    trust.distrust("a")
    assert not trust.is_trusted("a") and trust.is_trusted("b")
    assert trust.wanted.is_set()
    plan = trust.plan()
    assert plan is not None and set(plan.keys) == {"a"} and plan.since is None
    trust.repaired(plan)
    assert trust.is_trusted("a") and not trust.wanted.is_set()


def test_a_key_changed_again_during_its_repair_stays_distrusted() -> None:
    trust = RedisTrust(lapse=60, clock=Clock())
    trust.distrust("a")
    plan = trust.plan()
    assert plan is not None
    trust.distrust("a")  # a second change, after the pass read PostgreSQL
    trust.repaired(plan)
    assert not trust.is_trusted("a") and trust.wanted.is_set()


def test_the_quarantine_shuts_redis_out_until_a_pass_covers_it() -> None:
    trust = RedisTrust(lapse=60, clock=Clock())
    trust.quarantine(1000.0)
    trust.quarantine(900.0)  # an earlier loss widens it
    assert not trust.is_trusted("anything")
    plan = trust.plan()
    assert plan is not None and plan.since == 900.0
    trust.quarantine(950.0)  # lost again while repairing: that pass does not cover it
    trust.repaired(plan)
    assert trust.is_quarantined
    plan = trust.plan()
    assert plan is not None
    trust.repaired(plan)
    assert not trust.is_quarantined and trust.is_trusted("anything")


def test_distrust_and_quarantine_lapse_once_every_older_copy_has_expired() -> None:
    clock = Clock()
    trust = RedisTrust(lapse=60, clock=clock)
    trust.distrust("a")
    trust.quarantine(0.0)
    clock.now += 59
    assert not trust.is_trusted("a")
    clock.now += 2
    assert trust.is_trusted("a") and not trust.is_quarantined
    assert trust.plan() is None
