"""The route-file watcher: a change is loaded once the file has settled, never half-written."""

from __future__ import annotations

import os
from pathlib import Path

from gateway.config.settings import Settings
from gateway.services import Gateway

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "routes.yaml"
EXTRA = "  - {path: /public/v1/account/trades, methods: [GET], permission: read}\n"


def _gateway(tmp_path: Path) -> tuple[Gateway, Path, str]:
    routes = tmp_path / "routes.yaml"
    original = FIXTURE.read_text()
    routes.write_text(original)
    gateway = Gateway(Settings(routes_path=routes, upstream_url="http://127.0.0.1:9000"))
    gateway.table = gateway._load_routes()
    return gateway, routes, original


def _has_trades(gateway: Gateway) -> bool:
    return gateway.table.match("GET", "/public/v1/account/trades") is not None


def test_a_change_is_loaded_once_it_has_settled(tmp_path: Path) -> None:
    gateway, routes, original = _gateway(tmp_path)
    # Caught mid-write: the first part of the new file, itself a valid table.
    routes.write_text(original.split("routes:")[0] + "routes: []\n")
    gateway.reload_routes_if_changed()
    routes.write_text(original + EXTRA)  # the write completes before the next look
    gateway.reload_routes_if_changed()
    assert len(gateway.table.routes) > 0 and not _has_trades(gateway)  # never the half file
    gateway.reload_routes_if_changed()  # the same as a second ago: loaded
    assert _has_trades(gateway)
    gateway.reload_routes_if_changed()
    assert _has_trades(gateway)


def test_a_change_within_the_same_file_time_is_still_seen(tmp_path: Path) -> None:
    gateway, routes, original = _gateway(tmp_path)
    before = routes.stat().st_mtime_ns
    routes.write_text(original + EXTRA)
    os.utime(routes, ns=(before, before))  # file times are coarse: a rewrite may keep it
    gateway.reload_routes_if_changed()
    gateway.reload_routes_if_changed()
    assert _has_trades(gateway)


def test_a_broken_file_is_refused_once_and_the_table_stays(tmp_path: Path) -> None:
    gateway, routes, original = _gateway(tmp_path)
    routes.write_text(original + "  - {path: /public/v1/x, methods: [FETCH], public: true}\n")
    table = gateway.table
    for _ in range(3):
        gateway.reload_routes_if_changed()
    assert gateway.table is table
    routes.write_text(original + EXTRA)  # fixed: loaded
    gateway.reload_routes_if_changed()
    gateway.reload_routes_if_changed()
    assert _has_trades(gateway)
