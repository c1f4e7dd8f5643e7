"""`build_app(settings)`: the data plane's aiohttp application. Wiring only.

One catch-all handler turns each request into a `RequestContext`, runs the pipeline and is
the one place where a `GatewayError` becomes the contract's JSON answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import time
from collections.abc import AsyncIterator

from aiohttp import hdrs, web

from gateway.config.settings import Settings
from gateway.edge.connections import ConnectionGuard
from gateway.http.client_ip import client_ip
from gateway.http.errors import (
    GatewayError,
    HeadersTooLarge,
    InternalError,
    KeyInvalid,
    error_response,
)
from gateway.http.paths import normalise_path
from gateway.observability.status import health_response, readiness_response
from gateway.pipeline.context import RequestContext
from gateway.pipeline.runner import run_pipeline
from gateway.services import Gateway
from gateway.tasks import every, stop_task

__all__ = ["CONNECTIONS_KEY", "GATEWAY_KEY", "build_app", "handle"]

log = logging.getLogger(__name__)

GATEWAY_KEY: web.AppKey[Gateway] = web.AppKey("gateway", Gateway)
# Set by `server.listen`, which serves every connection through the guard.
CONNECTIONS_KEY: web.AppKey[ConnectionGuard] = web.AppKey("connections", ConnectionGuard)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id_of(request: web.BaseRequest) -> str:
    """The client's X-Request-Id when it is safe to echo and log, else a fresh one."""
    given = request.headers.get(hdrs.X_REQUEST_ID)  # an istr: looked up without case-folding
    if given is not None and _REQUEST_ID.fullmatch(given):
        return given
    return os.urandom(12).hex()


def _header_bytes(request: web.Request) -> int:
    raw = request.raw_headers
    total = 4 * len(raw)  # ": " and CRLF; a plain loop: a generator costs more than the sum
    for name, value in raw:
        total += len(name) + len(value)
    return total


async def handle(request: web.Request) -> web.StreamResponse:
    """Every request on the gateway port."""
    started = time.perf_counter_ns()
    gateway = request.app[GATEWAY_KEY]
    request_id = request_id_of(request)
    ctx: RequestContext | None = None
    response: web.StreamResponse
    code = ""
    connections = request.app.get(CONNECTIONS_KEY)
    guarded = connections.request_started(request.transport) if connections else None
    try:
        if _header_bytes(request) > gateway.settings.max_header_size:
            raise HeadersTooLarge
        path = normalise_path(request.raw_path.partition("?")[0])
        trusted = gateway.settings.trusted_proxies
        # X-Forwarded-For is read only when some proxy may be believed.
        ip, ip_text = client_ip(
            request.remote, request.headers.getall(hdrs.X_FORWARDED_FOR, ()) if trusted else (),
            trusted)
        ctx = RequestContext(request, request_id, path, ip, ip_text, gateway)
        ctx.connection = guarded.state if guarded is not None else None
        response = await run_pipeline(ctx, gateway.steps)
    except GatewayError as error:
        if isinstance(error, KeyInvalid) and ctx is not None:
            gateway.spawn(gateway.guard.record_failure(ctx.client_ip_text))
        code = error.code
        response = error_response(error, request_id)
        if ctx is not None and ctx.rate_limit is not None:
            response.headers.setdefault("X-RateLimit-Limit", str(ctx.rate_limit))
            response.headers.setdefault("X-RateLimit-Remaining", str(ctx.rate_remaining))
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error in request %s", request_id)
        code = InternalError.code
        response = error_response(InternalError(), request_id)
    finally:
        if guarded is not None:
            guarded.request_finished()
    gateway.outcomes.add(ctx, request, request_id, response.status, code, started)
    return response


async def healthz(request: web.Request) -> web.Response:
    """`/healthz` on the gateway port too; like every answer here, with a request id."""
    response = health_response()
    response.headers["X-Request-Id"] = request_id_of(request)
    return response


async def readyz(request: web.Request) -> web.Response:
    """`/readyz` on the gateway port too."""
    response = await readiness_response(request.app[GATEWAY_KEY])
    response.headers["X-Request-Id"] = request_id_of(request)
    return response


def build_app(settings: Settings) -> web.Application:
    """The gateway application; its services open on startup and close on cleanup."""
    app = web.Application(client_max_size=settings.max_body_size)

    async def services(app: web.Application) -> AsyncIterator[None]:
        gateway = await Gateway.open(settings)
        app[GATEWAY_KEY] = gateway
        metrics_sync = every(1.0, gateway.sync_metrics, "metrics-sync")
        # The route file, reloaded when it changes on disk.
        watcher = every(1.0, gateway.reload_routes_if_changed, "routes-watch")
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, gateway.reload_routes)
        yield
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGHUP)
        await stop_task(watcher)
        await stop_task(metrics_sync)
        gateway.sync_metrics()  # the last requests of a worker that stops
        await gateway.aclose()

    app.cleanup_ctx.append(services)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app

