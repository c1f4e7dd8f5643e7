"""The route file's key policy applied to new keys and rolls, and counted on existing keys.

At the gateway the policy is enforced per request (`check_ip` for the allowlist rule,
`check_key_expiry` for dormancy); here it decides whether a key may be created, and how many
existing keys a policy affects (`gateway check-config`).
"""

from __future__ import annotations

from collections.abc import Collection

import asyncpg

from gateway.config.routes import KeyPolicy

__all__ = ["LIFETIME_FIELD", "policy_impact", "policy_problems"]

LIFETIME_FIELD = "expires_in"  # the key of expiry problems: the form and the CLI name it


def policy_problems(policy: KeyPolicy, *, permissions: Collection[str], has_ips: bool,
                    lifetime: float | None) -> dict[str, str]:
    """What stops a new key (or roll) under `policy`, by field (`ips`, `expires_in`).

    `lifetime`: seconds from now to the key's expiry, None for never. Pure: no I/O.
    """
    problems: dict[str, str] = {}
    needing = sorted(set(permissions) & policy.require_ip_allowlist)
    if needing and not has_ips:
        problems["ips"] = (f"A key with the {', '.join(needing)} permission needs at least "
                           "one IP address (policy require_ip_allowlist).")
    days = policy.max_key_lifetime_days
    if days is not None:
        if lifetime is None:
            problems[LIFETIME_FIELD] = (f"Keys must expire within {days} days (policy "
                                        "max_key_lifetime_days): choose an expiry.")
        elif lifetime > days * 86400.0 + 1.0:  # a second for the clock moving on
            problems[LIFETIME_FIELD] = (f"Keys must expire within {days} days (policy "
                                        "max_key_lifetime_days): choose a shorter expiry.")
    return problems


async def policy_impact(conn: asyncpg.Connection, policy: KeyPolicy) -> list[str]:
    """One line per policy rule in force: how many existing active keys it affects."""
    lines: list[str] = []
    required = sorted(policy.require_ip_allowlist)
    if required:
        count = await conn.fetchval(
            "SELECT count(*) FROM api_keys WHERE status = 'active'"
            " AND cardinality(allowed_ips) = 0 AND permissions && $1::text[]", required)
        names = ", ".join(required)
        lines.append(f"policy require_ip_allowlist [{names}]: {_keys(count)} with {names} "
                     f"{_have(count)} no IP allowlist and will be refused on {names} routes")
    if policy.max_key_lifetime_days is not None:
        days = policy.max_key_lifetime_days
        count = await conn.fetchval(
            "SELECT count(*) FROM api_keys WHERE status = 'active' AND (expires_at IS NULL"
            " OR expires_at > now() + make_interval(days => $1))", days)
        lines.append(f"policy max_key_lifetime_days {days}: {_keys(count)} {_have(count)} no "
                     "expiry or a later one; they keep working (the rule applies to new keys "
                     "and rolls)")
    if policy.dormant_after_days is not None:
        days = policy.dormant_after_days
        count = await conn.fetchval(
            "SELECT count(*) FROM api_keys WHERE status = 'active'"
            " AND coalesce(last_used_at, confirmed_at) < now() - make_interval(days => $1)",
            days)
        lines.append(f"policy dormant_after_days {days}: {_keys(count)} {_have(count)} not "
                     f"been used for {days} days and will be refused (APIKEY_EXPIRED)")
    return lines


def _keys(count: int) -> str:
    return f"{count} existing key" + ("" if count == 1 else "s")


def _have(count: int) -> str:
    return "has" if count == 1 else "have"
