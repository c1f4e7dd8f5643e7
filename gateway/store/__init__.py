"""Key storage: PostgreSQL is the truth, Redis and an in-process cache copy it."""

from gateway.store.base import KeyRecord, KeyStore
from gateway.store.layered import LayeredKeyStore
from gateway.store.memory import MISS, MemoryCache

__all__ = ["MISS", "KeyRecord", "KeyStore", "LayeredKeyStore", "MemoryCache"]
