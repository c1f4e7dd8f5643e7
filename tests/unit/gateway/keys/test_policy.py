"""The key policy at creation: allowlist for some permissions, a maximum lifetime."""

from __future__ import annotations

from gateway.config.routes import KeyPolicy
from gateway.keys.policy import policy_problems

DAY = 86400.0


def test_no_policy_allows_anything() -> None:
    assert policy_problems(KeyPolicy(), permissions=["withdraw"], has_ips=False,
                           lifetime=None) == {}


def test_an_allowlist_is_required_for_the_named_permissions_only() -> None:
    policy = KeyPolicy(require_ip_allowlist=frozenset({"withdraw"}))
    problems = policy_problems(policy, permissions=["read", "withdraw"], has_ips=False,
                               lifetime=None)
    assert set(problems) == {"ips"} and "withdraw permission needs" in problems["ips"]
    assert policy_problems(policy, permissions=["read"], has_ips=False, lifetime=None) == {}
    assert policy_problems(policy, permissions=["withdraw"], has_ips=True, lifetime=None) == {}


def test_new_keys_must_expire_within_the_maximum_lifetime() -> None:
    policy = KeyPolicy(max_key_lifetime_days=90)
    never = policy_problems(policy, permissions=["read"], has_ips=False, lifetime=None)
    assert "choose an expiry" in never["expires_in"]
    later = policy_problems(policy, permissions=["read"], has_ips=False, lifetime=91 * DAY)
    assert "shorter" in later["expires_in"]
    assert policy_problems(policy, permissions=["read"], has_ips=False,
                           lifetime=90 * DAY) == {}
