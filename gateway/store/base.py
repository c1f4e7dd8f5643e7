"""The key store's seam: what a lookup returns and the interface every layer implements."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Protocol

from gateway.config.settings import Network

__all__ = ["KeyRecord", "KeyStore", "decode_record", "encode_record"]


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """An active key as the data plane needs it. Holds the secret's hash, never the secret."""

    key_id: str
    account_id: int
    permissions: frozenset[str]
    allowed_ips: tuple[Network, ...]
    secret_hash: bytes
    hash_version: int

    def __repr__(self) -> str:
        return f"KeyRecord(key_id={self.key_id!r}, account_id={self.account_id})"

    def allows_ip(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        """True when the allowlist is empty or contains `address`."""
        return not self.allowed_ips or any(address in net for net in self.allowed_ips)


class KeyStore(Protocol):
    """One layer of the key store. `get` returns only active keys; None means no such key."""

    async def get(self, key_id: str) -> KeyRecord | None: ...

    async def aclose(self) -> None: ...


def encode_record(record: KeyRecord) -> bytes:
    """The Redis representation of a record."""
    return json.dumps(
        {
            "a": record.account_id,
            "p": sorted(record.permissions),
            "i": [str(n) for n in record.allowed_ips],
            "h": record.secret_hash.hex(),
            "v": record.hash_version,
        },
        separators=(",", ":"),
    ).encode()


def decode_record(key_id: str, data: bytes) -> KeyRecord:
    """Inverse of `encode_record`."""
    raw = json.loads(data)
    return KeyRecord(
        key_id=key_id,
        account_id=int(raw["a"]),
        permissions=frozenset(raw["p"]),
        allowed_ips=tuple(ipaddress.ip_network(n) for n in raw["i"]),
        secret_hash=bytes.fromhex(raw["h"]),
        hash_version=int(raw["v"]),
    )
