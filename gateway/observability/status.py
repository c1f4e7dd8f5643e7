"""The status port: `/healthz`, `/readyz` and `/metrics`, and an index of them at `/`.
Not for the public network."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
from collections.abc import Awaitable, Callable
from typing import Protocol

import asyncpg
from aiohttp import web

from gateway.config.settings import Settings
from gateway.observability.metrics import CONTENT_TYPE_LATEST, render_metrics
from gateway.observability.readiness import tcp_reachable

__all__ = ["StatusSource", "build_status_app", "build_supervisor_status_app", "health_response",
           "index_response", "readiness_response"]

_PAGES = (
    ("/healthz", "alive: the process answers"),
    ("/readyz", "ready: PostgreSQL and the upstream answer (503 otherwise)"),
    ("/metrics", "Prometheus metrics"),
)
_INDEX = "".join([
    "<!doctype html><html><head><meta charset=\"utf-8\"><title>Keygate status</title></head>",
    "<body><h1>Keygate status</h1><ul>",
    *(f'<li><a href="{path}">{path}</a>: {text}</li>' for path, text in _PAGES),
    "</ul></body></html>",
])


class StatusSource(Protocol):
    """What the status port asks of a gateway process."""

    def sync_metrics(self) -> None: ...

    async def readiness(self) -> dict[str, bool]: ...


def _json(status: int, body: dict[str, object]) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


async def _metrics(request: web.Request) -> web.Response:
    body = await asyncio.get_running_loop().run_in_executor(None, render_metrics)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _synced_metrics(get_source: Callable[[], StatusSource]
                    ) -> Callable[[web.Request], Awaitable[web.Response]]:
    """`/metrics` of a single process: its gateway's counters are brought up to date first."""

    async def metrics(request: web.Request) -> web.Response:
        get_source().sync_metrics()
        return await _metrics(request)

    return metrics


async def index_response(request: web.Request) -> web.Response:
    """`/`: what the status port answers, as links (for whoever opens it in a browser)."""
    return web.Response(text=_INDEX, content_type="text/html")


def health_response() -> web.Response:
    """Alive: the process answers."""
    return _json(200, {"status": "ok"})


async def readiness_response(source: StatusSource) -> web.Response:
    """Ready: keys can be checked (PostgreSQL) and the upstream answers. Redis is optional:
    the gateway degrades without it."""
    checks = await source.readiness()
    ready = checks["postgres"] and checks["upstream"]
    return _json(200 if ready else 503,
                 {"status": "ready" if ready else "unavailable", "checks": checks})


def build_status_app(get_source: Callable[[], StatusSource]) -> web.Application:
    """Status of a single-process gateway."""

    async def healthz(request: web.Request) -> web.Response:
        return health_response()

    async def readyz(request: web.Request) -> web.Response:
        return await readiness_response(get_source())

    app = web.Application()
    app.router.add_get("/", index_response)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", _synced_metrics(get_source))
    return app


def build_supervisor_status_app(
    settings: Settings, get_workers: Callable[[], list[multiprocessing.process.BaseProcess]]
) -> web.Application:
    """Status of a multi-worker gateway, answered by the supervising parent."""

    async def healthz(request: web.Request) -> web.Response:
        alive = sum(1 for w in get_workers() if w.is_alive())
        return _json(200 if alive else 503, {"status": "ok" if alive else "down",
                                             "workers_alive": alive})

    async def readyz(request: web.Request) -> web.Response:
        try:
            conn = await asyncpg.connect(settings.database_url, timeout=1.0)
            await conn.close()
            postgres = True
        except Exception:
            postgres = False
        upstream = settings.upstream_url is None or await tcp_reachable(settings.upstream_url)
        ready = postgres and upstream and any(w.is_alive() for w in get_workers())
        return _json(200 if ready else 503, {"status": "ready" if ready else "unavailable",
                                             "checks": {"postgres": postgres,
                                                        "upstream": upstream}})

    app = web.Application()
    app.router.add_get("/", index_response)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", _metrics)
    return app
