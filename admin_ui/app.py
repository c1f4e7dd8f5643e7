"""The admin UI application: `build_admin_app` wires settings, stores, mail and routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp_jinja2
import asyncpg
import jinja2
from aiohttp import web

from admin_ui import db
from admin_ui.accesslog import RedactingAccessLogger
from admin_ui.background import BACKGROUND_KEY, Background
from admin_ui.csrf import csrf_middleware
from admin_ui.db import POOL_KEY
from admin_ui.devmail import MAILBOX_KEY, DevMailbox, start_mail_sink
from admin_ui.mail import MAILER_KEY, InMemoryMailer, Mailer, SmtpMailer, default_sender
from admin_ui.middlewares import add_security_headers, error_pages
from admin_ui.permissions import PERMISSIONS_KEY, PermissionCatalog
from admin_ui.render import render
from admin_ui.routes import setup_routes
from admin_ui.security import KEYS_KEY, DerivedKeys
from admin_ui.sessions import session_id, session_middleware
from admin_ui.settings import SETTINGS_KEY
from admin_ui.throttle import THROTTLE_KEY, Throttle
from admin_ui.views.devmail import add_mailbox_routes
from admin_ui.views.keys import CACHE_KEY
from gateway.config.settings import Settings, SettingsError
from gateway.store.redis import RedisKeyCache, connect_redis
from gateway.tasks import stop_task

__all__ = ["DEV_MAIL_PORT", "build_admin_app", "build_dev_admin", "dev_sink_url", "run_admin"]

log = logging.getLogger(__name__)

_TEMPLATES = Path(__file__).parent / "templates"
_SESSION_PURGE_INTERVAL = 600.0
DEV_MAIL_PORT = 1025

async def _forbidden(request: web.Request) -> web.StreamResponse:
    return render(request, "error.html", {
        "title": "Form expired",
        "message": "This form was not accepted: it is too old or came from another site. "
                   "Go back, reload the page and try again.",
    }, status=403)


def _mailer_for(settings: Settings, dev_mail_port: int | None) -> Mailer:
    sender = default_sender(settings.admin_url)
    if settings.smtp_url:
        try:
            return SmtpMailer(settings.smtp_url, sender=sender)
        except ValueError as exc:
            raise SettingsError([str(exc)]) from exc
    if dev_mail_port is not None:
        return SmtpMailer(dev_sink_url(dev_mail_port), sender=sender)
    log.warning("no GATEWAY_SMTP_URL: the admin UI cannot send email")
    return InMemoryMailer(is_warning=True)


def dev_sink_url(port: int) -> str:
    """The dev mail sink's URL: plain SMTP on purpose, as it listens on loopback only."""
    return f"smtp://127.0.0.1:{port}?tls=off"


def build_admin_app(
    settings: Settings,
    *,
    mailer: Mailer | None = None,
    dev_mail_port: int | None = None,
    dev_mail_host: str = "127.0.0.1",
    dev_mailbox: DevMailbox | None = None,
) -> web.Application:
    """The admin UI for resolved settings (store URLs and secrets set).

    Dev mode: with `dev_mail_port`, an aiosmtpd sink runs beside the app on that port and,
    unless `GATEWAY_SMTP_URL` or `mailer` says otherwise, mail goes to it through SMTP; with
    `dev_mailbox` (a sink run by the caller) or `dev_mail_port`, `/dev/mailbox` and
    `/dev/mailbox.json` show what it received.
    """
    missing = [name for name in ("database_url", "redis_url", "secret_key", "key_pepper")
               if not getattr(settings, name)]
    if missing:
        raise ValueError(f"admin UI settings missing: {', '.join(missing)}")
    assert settings.secret_key is not None

    # SECURITY: the app brings its own access logger, so whichever runner serves it, emailed
    # links' tokens stay out of the access log.
    app = web.Application(middlewares=[],
                          handler_args={"access_log_class": RedactingAccessLogger})
    keys = DerivedKeys.from_secret(settings.secret_key)
    app[SETTINGS_KEY] = settings
    app[KEYS_KEY] = keys
    app[PERMISSIONS_KEY] = PermissionCatalog(settings.routes_path, settings.upstream_url)
    app[MAILER_KEY] = mailer or _mailer_for(settings, dev_mail_port)
    app[BACKGROUND_KEY] = Background()
    if dev_mailbox is None and dev_mail_port is not None:
        dev_mailbox = DevMailbox()
    if dev_mailbox is not None:
        app[MAILBOX_KEY] = dev_mailbox
        add_mailbox_routes(app)
    if dev_mail_port is not None:
        assert dev_mailbox is not None
        app.cleanup_ctx.append(_mail_sink_context(dev_mailbox, dev_mail_host, dev_mail_port))

    app.middlewares.extend([
        error_pages,
        session_middleware,
        csrf_middleware(keys.csrf, session_id, _forbidden),
    ])
    app.on_response_prepare.append(add_security_headers)
    aiohttp_jinja2.setup(
        app, loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
        # SECURITY: every value is HTML-escaped unless a template says otherwise.
        autoescape=True, undefined=jinja2.StrictUndefined,
    )
    app.cleanup_ctx.append(_stores_context)
    setup_routes(app)
    return app


async def _stores_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS_KEY]
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=10)
    assert pool is not None
    client = connect_redis(settings.redis_url or "", settings.store_timeout)
    app[POOL_KEY] = pool
    app[CACHE_KEY] = RedisKeyCache.from_settings(client, settings)
    app[THROTTLE_KEY] = Throttle(client, settings.redis_prefix, settings.login_fail_limit,
                                 settings.login_fail_window)
    purger = asyncio.create_task(_purge_sessions(pool))
    try:
        yield
    finally:
        await app[BACKGROUND_KEY].aclose()
        await stop_task(purger)
        await client.aclose()
        await pool.close()


async def _purge_sessions(pool: asyncpg.Pool) -> None:
    while True:
        try:
            async with pool.acquire() as conn:
                await db.purge_expired_sessions(conn)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("purging expired sessions failed: %r", exc)
        await asyncio.sleep(_SESSION_PURGE_INTERVAL)


def _mail_sink_context(mailbox: DevMailbox, host: str,
                       port: int) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(_app: web.Application) -> AsyncIterator[None]:
        server = await start_mail_sink(mailbox, host, port)
        log.info("dev mail sink on smtp://%s:%d (messages at /dev/mailbox)", host, port)
        try:
            yield
        finally:
            server.close()
            await server.wait_closed()

    return context


async def build_dev_admin(
    settings: Settings, admin_port: int, *, mail_port: int = DEV_MAIL_PORT
) -> tuple[web.Application, list[str], Callable[[], Awaitable[None]]]:
    """For `gateway dev`: the admin app, lines to print, and a cleanup to await at exit.

    Without `GATEWAY_SMTP_URL`, the dev mail sink runs on `mail_port` and the app sends to it
    through SMTP; `/dev/mailbox` shows what arrived.
    """
    if settings.admin_url == Settings().admin_url:
        # Links must point at the port the admin UI really listens on.
        settings = settings.replace(admin_url=f"http://127.0.0.1:{admin_port}")
    if settings.smtp_url:
        async def nothing() -> None:
            return None

        return build_admin_app(settings), [], nothing
    mailbox = DevMailbox()
    server = await start_mail_sink(mailbox, "127.0.0.1", mail_port)
    app = build_admin_app(settings.replace(smtp_url=dev_sink_url(mail_port)),
                          dev_mailbox=mailbox)

    async def close() -> None:
        server.close()
        await server.wait_closed()

    return app, [
        f"  dev mail sink     {dev_sink_url(mail_port)}",
        f"  dev mailbox       {settings.admin_url}/dev/mailbox",
    ], close


def run_admin(settings: Settings, *, port: int, host: str,
              dev_mail_port: int | None = None) -> None:
    """Serve the admin UI until interrupted (`gateway admin`)."""
    app = build_admin_app(settings, dev_mail_port=dev_mail_port)
    ssl_context = settings.ssl_context
    scheme = "https" if ssl_context is not None else "http"
    print(f"admin UI on {scheme}://{host}:{port} (public URL {settings.admin_url})", flush=True)
    web.run_app(app, host=host, port=port, print=None, ssl_context=ssl_context,
                access_log=logging.getLogger("admin_ui.access") if settings.access_log
                else None, access_log_class=RedactingAccessLogger)
