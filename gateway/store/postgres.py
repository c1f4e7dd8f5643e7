"""The PostgreSQL layer: the source of truth for keys."""

from __future__ import annotations

import ipaddress

import asyncpg

from gateway.store.base import KeyRecord

__all__ = ["PostgresKeyStore", "create_pool", "to_networks"]

_SELECT_ACTIVE = """
SELECT user_id, permissions, allowed_ips, secret_hash, hash_version,
       extract(epoch FROM expires_at)::float8 AS expires_at,
       extract(epoch FROM confirmed_at)::float8 AS confirmed_at,
       extract(epoch FROM last_used_at)::float8 AS last_used_at,
       ARRAY(SELECT address FROM key_withdraw_addresses a
             WHERE a.key_id = k.key_id AND a.effective_at IS NOT NULL
             ORDER BY address) AS addresses,
       ARRAY(SELECT extract(epoch FROM effective_at)::float8 FROM key_withdraw_addresses a
             WHERE a.key_id = k.key_id AND a.effective_at IS NOT NULL
             ORDER BY address) AS usable_from
FROM api_keys k WHERE key_id = $1 AND status = 'active'
"""


async def create_pool(url: str, *, min_size: int = 1, max_size: int = 10,
                      timeout: float = 5.0) -> asyncpg.Pool:
    """An asyncpg pool; `timeout` bounds connecting and each command."""
    pool = await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, timeout=timeout, command_timeout=timeout
    )
    assert pool is not None
    return pool


def to_networks(values: list[object] | None) -> tuple[ipaddress.IPv4Network
                                                      | ipaddress.IPv6Network, ...]:
    """asyncpg's inet values as networks, IPv4-mapped IPv6 folded to IPv4."""
    networks = []
    for value in values or ():
        network = ipaddress.ip_network(str(value), strict=False)
        if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped:
            prefix = max(0, network.prefixlen - 96)
            network = ipaddress.ip_network(
                f"{network.network_address.ipv4_mapped}/{prefix}", strict=False
            )
        networks.append(network)
    return tuple(networks)


class PostgresKeyStore:
    """Looks up active keys. Errors propagate: the layered store decides what they mean."""

    def __init__(self, pool: asyncpg.Pool, timeout: float = 2.0) -> None:
        self.pool = pool
        self._timeout = timeout

    async def get(self, key_id: str) -> KeyRecord | None:
        row = await self.pool.fetchrow(_SELECT_ACTIVE, key_id, timeout=self._timeout)
        if row is None:
            return None
        return KeyRecord(
            key_id=key_id,
            account_id=row["user_id"],
            permissions=frozenset(row["permissions"]),
            allowed_ips=to_networks(row["allowed_ips"]),
            secret_hash=bytes(row["secret_hash"]),
            hash_version=row["hash_version"],
            expires_at=row["expires_at"],
            confirmed_at=row["confirmed_at"],
            last_used_at=row["last_used_at"],
            withdraw_addresses=tuple(zip(row["addresses"], row["usable_from"], strict=True)),
        )

    async def aclose(self) -> None:
        await self.pool.close()
