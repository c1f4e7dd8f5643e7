"""admin_ui.accesslog: the path written for each route of the real admin router, never a
secret, whatever route carries it."""

from __future__ import annotations

import secrets

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from aiohttp.web_urldispatcher import DynamicResource

from admin_ui.accesslog import PUBLIC_PARAMS, REDACTED, loggable_path
from admin_ui.app import build_admin_app
from admin_ui.devmail import DevMailbox
from admin_ui.mail import InMemoryMailer
from gateway.config.settings import Settings

KEY_ID = "abcdefghijklmnop"


@pytest.fixture
def app() -> web.Application:
    # Built, never started: nothing connects to these stores.
    settings = Settings(database_url="postgresql://unused/unused", redis_url="redis://unused",
                        secret_key="s" * 32, key_pepper="p" * 32)
    return build_admin_app(settings, mailer=InMemoryMailer(), dev_mailbox=DevMailbox())


async def _logged(app: web.Application, method: str, path: str) -> str:
    """What is logged for `method path` once the real router has resolved it, as the app's
    request handling does."""
    request = make_mocked_request(method, path, app=app)
    match_info = await app.router.resolve(request)
    match_info.add_app(app)
    request._match_info = match_info  # make_mocked_request would wrap it in a mock route
    return loggable_path(request)


async def test_every_dynamic_route_redacts_all_but_public_parameters(app: web.Application
                                                                     ) -> None:
    dynamic = [r for r in app.router.resources() if isinstance(r, DynamicResource)]
    assert {"/verify/{token}", "/password/reset/{token}", "/keys/confirm/{token}"} <= {
        r.canonical for r in dynamic}
    for resource in dynamic:
        names = [part[1:-1] for part in resource.canonical.split("/") if part.startswith("{")]
        values = {n: KEY_ID if n in PUBLIC_PARAMS else secrets.token_urlsafe(32) for n in names}
        path = resource.url_for(**values).path
        for route in resource:
            logged = await _logged(app, route.method, path)
            for name, value in values.items():
                assert (value in logged) == (name in PUBLIC_PARAMS), (resource.canonical, logged)


async def test_unmatched_paths_keep_only_route_words(app: web.Application) -> None:
    token = secrets.token_urlsafe(32)
    assert await _logged(app, "GET", f"/verify/{token}/") == f"/verify/{REDACTED}/"
    assert await _logged(app, "GET", f"/keys/confirm/{token}/x") == \
        f"/keys/confirm/{REDACTED}/{REDACTED}"
    # A method the route lacks (405) is no match either.
    assert await _logged(app, "HEAD", f"/keys/confirm/{token}") == f"/keys/confirm/{REDACTED}"
    assert await _logged(app, "GET", "/wp-login.php") == f"/{REDACTED}"


async def test_plain_and_static_paths_are_kept(app: web.Application) -> None:
    assert await _logged(app, "GET", "/login") == "/login"
    assert await _logged(app, "GET", f"/keys/{KEY_ID}/delete") == f"/keys/{KEY_ID}/delete"
    assert await _logged(app, "GET", "/static/admin.css") == "/static/admin.css"


def test_an_unrouted_request_is_fully_redacted() -> None:
    # What the server's handler of unparseable requests logs: no route was ever resolved.
    request = make_mocked_request("GET", "/verify/x")
    request._match_info = None
    assert loggable_path(request) == REDACTED
