"""The key store's seam: what a lookup returns and the interface every layer implements."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from gateway.config.settings import Network

__all__ = ["KeyRecord", "KeyStore", "RecordRejected", "decode_record", "encode_record",
           "record_mac_key"]

# A record in Redis reads `1.<hex MAC>.<JSON>`; the MAC covers the key id and the JSON.
_VERSION = b"1"
_MAC_HEX = 64
_MAC_CONTEXT = b"keygate redis record mac v1"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """An active key as the data plane needs it. Holds the secret's hash, never the secret."""

    key_id: str
    account_id: int
    permissions: frozenset[str]
    allowed_ips: tuple[Network, ...]
    secret_hash: bytes
    hash_version: int
    # Lifecycle, all unix seconds: decided per request from the cached record, no round trip.
    expires_at: float | None = None  # its own expiry or a roll's overlap end; None: never
    confirmed_at: float | None = None
    last_used_at: float | None = None  # as of when the record was read (for dormancy)
    # (address, usable from): confirmed addresses, some perhaps still in their cooldown.
    withdraw_addresses: tuple[tuple[str, float], ...] = ()

    def __repr__(self) -> str:
        return f"KeyRecord(key_id={self.key_id!r}, account_id={self.account_id})"

    def allows_ip(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        """True when the allowlist is empty or contains `address`."""
        return not self.allowed_ips or any(address in net for net in self.allowed_ips)


class KeyStore(Protocol):
    """One layer of the key store. `get` returns only active keys; None means no such key."""

    async def get(self, key_id: str) -> KeyRecord | None: ...

    async def aclose(self) -> None: ...


class RecordRejected(ValueError):
    """A Redis value that is not a record this gateway wrote: a bad MAC, or malformed."""


def record_mac_key(pepper: str) -> bytes:
    """The key of Redis record MACs, derived from the pepper (never the pepper itself)."""
    return hmac.new(pepper.encode(), _MAC_CONTEXT, hashlib.sha256).digest()


def _mac(mac_key: bytes, key_id: str, body: bytes) -> bytes:
    # The key id is MAC'd with the body: a record copied under another key id fails.
    message = b"%s\0%s\0%s" % (_VERSION, key_id.encode(), body)
    return hmac.new(mac_key, message, hashlib.sha256).hexdigest().encode()


def encode_record(record: KeyRecord, mac_key: bytes) -> bytes:
    """The Redis representation of a record, MAC'd under `mac_key`."""
    body = json.dumps(
        {
            "a": record.account_id,
            "p": sorted(record.permissions),
            "i": [str(n) for n in record.allowed_ips],
            "h": record.secret_hash.hex(),
            "v": record.hash_version,
            "e": record.expires_at,
            "c": record.confirmed_at,
            "u": record.last_used_at,
            "w": [list(pair) for pair in record.withdraw_addresses],
        },
        separators=(",", ":"),
    ).encode()
    return b"%s.%s.%s" % (_VERSION, _mac(mac_key, record.key_id, body), body)


def decode_record(key_id: str, data: bytes, mac_keys: Iterable[bytes]) -> KeyRecord:
    """Inverse of `encode_record`; raises `RecordRejected` unless one of `mac_keys` made it.

    Nothing of the body is read before its MAC is checked.
    """
    version, _, rest = data.partition(b".")
    mac, _, body = rest.partition(b".")
    if version != _VERSION or len(mac) != _MAC_HEX or not body:
        raise RecordRejected("not a MAC'd record")
    # SECURITY: constant-time compare; whoever can write Redis cannot forge a record.
    if not any(hmac.compare_digest(_mac(k, key_id, body), mac) for k in mac_keys):
        raise RecordRejected("bad MAC")
    try:
        raw = json.loads(body)
        return KeyRecord(
            key_id=key_id,
            account_id=int(raw["a"]),
            permissions=frozenset(raw["p"]),
            allowed_ips=tuple(ipaddress.ip_network(n) for n in raw["i"]),
            secret_hash=bytes.fromhex(raw["h"]),
            hash_version=int(raw["v"]),
            expires_at=_seconds(raw["e"]),
            confirmed_at=_seconds(raw["c"]),
            last_used_at=_seconds(raw["u"]),
            withdraw_addresses=tuple((str(a), float(t)) for a, t in raw["w"]),
        )
    except (ValueError, KeyError, TypeError) as exc:  # MAC'd, so written by a gateway: a bug
        raise RecordRejected(f"malformed record: {exc!r}") from None


def _seconds(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"not a time: {value!r}")
