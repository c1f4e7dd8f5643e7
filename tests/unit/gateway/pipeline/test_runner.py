"""Which steps a gateway runs: the contract's order, less what its settings turn off."""

from __future__ import annotations

from gateway.pipeline.ratelimit import apply_rate_limit
from gateway.pipeline.runner import PRIVATE_STEPS, PUBLIC_STEPS, steps_for


def test_the_rate_limit_step_runs_only_with_rate_limits_on() -> None:
    on, off = steps_for(rate_limits=True), steps_for(rate_limits=False)
    assert on.private == PRIVATE_STEPS and on.public == PUBLIC_STEPS
    assert apply_rate_limit not in off.private + off.public
    # The other steps keep their order.
    assert off.private == tuple(s for s in PRIVATE_STEPS if s is not apply_rate_limit)
    assert off.public == tuple(s for s in PUBLIC_STEPS if s is not apply_rate_limit)


def test_the_lifecycle_steps_have_their_places() -> None:
    from gateway.pipeline.auth import lookup_key
    from gateway.pipeline.lifecycle import check_key_expiry, check_withdrawal_address
    from gateway.pipeline.permissions import check_permission

    steps = list(PRIVATE_STEPS)
    assert steps.index(check_key_expiry) == steps.index(lookup_key) + 1
    assert steps.index(check_withdrawal_address) == steps.index(check_permission) + 1
    assert check_key_expiry not in PUBLIC_STEPS
