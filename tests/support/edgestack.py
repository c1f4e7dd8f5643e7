"""Settings for a gateway under hostile traffic: the shipped route table, short deadlines.

Shared by the edge's corpus and its fuzz, which each run one gateway per module in front of a
`RecordingUpstream`.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from gateway.config.settings import Settings

__all__ = ["ROOT", "edge_routes", "edge_settings"]

ROOT = Path(__file__).resolve().parent.parent.parent


def edge_routes(folder: Path) -> Path:
    """The shipped route table (config/routes.yaml), plus a HEAD route, which it has none of."""
    path = folder / "routes.yaml"
    path.write_text((ROOT / "config" / "routes.yaml").read_text()
                    + "  - {path: /public/v1/time, methods: [HEAD], public: true}\n")
    return path


def edge_settings(database_url: str, redis_url: str, upstream_url: str, folder: Path,
                  **changes: Any) -> Settings:
    """Real stores, fresh secrets, no rate limits (a module sends many requests from one
    address on one key), a key cache that outlives the module, and `changes`."""
    return Settings(
        database_url=database_url, redis_url=redis_url,
        redis_prefix=f"kgtest:{secrets.token_hex(6)}:",
        secret_key=secrets.token_urlsafe(32), key_pepper=secrets.token_urlsafe(32),
        routes_path=edge_routes(folder), data_dir=folder / "data", upstream_url=upstream_url,
        auth_fail_limit=10_000, rate_limits=False, key_cache_ttl=3600.0,
    ).replace(**changes)
