"""admin_ui.csrf: tokens bound to the session cookie; the middleware refuses any unsafe
request without one (a real in-process server, no mocks)."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient

from admin_ui.csrf import CSRF_FIELD, CSRF_HEADER, csrf_middleware, csrf_token, is_valid_csrf

KEY = b"k" * 32


def test_tokens_are_bound_to_the_session() -> None:
    token = csrf_token(KEY, "session-a")
    assert token == csrf_token(KEY, "session-a")
    assert token != csrf_token(KEY, "session-b")
    assert token != csrf_token(b"x" * 32, "session-a")
    assert is_valid_csrf(KEY, "session-a", token)
    assert not is_valid_csrf(KEY, "session-b", token)
    assert not is_valid_csrf(KEY, None, token)
    assert not is_valid_csrf(KEY, "session-a", None)
    assert not is_valid_csrf(KEY, "session-a", "")
    assert not is_valid_csrf(KEY, "session-a", token[:-1])
    assert not is_valid_csrf(KEY, "session-a", "é")


def _app() -> web.Application:
    async def forbidden(request: web.Request) -> web.Response:
        return web.Response(status=403, text="forbidden")

    async def handler(request: web.Request) -> web.Response:
        form = await request.post()
        return web.Response(text=f"ok {form.get('value', '')}")

    app = web.Application(middlewares=[
        csrf_middleware(KEY, lambda request: request.cookies.get("sid"), forbidden)])
    app.router.add_route("*", "/", handler)
    return app


async def test_middleware(aiohttp_client: object) -> None:
    client: TestClient = await aiohttp_client(_app())  # type: ignore[operator]
    token = csrf_token(KEY, "s1")
    client.session.cookie_jar.update_cookies({"sid": "s1"})
    assert (await client.get("/")).status == 200  # safe methods pass
    assert (await client.post("/", data={"value": "1"})).status == 403
    assert (await client.post("/", data={"value": "1", CSRF_FIELD: "nope"})).status == 403
    resp = await client.post("/", data={"value": "1", CSRF_FIELD: token})
    assert resp.status == 200 and await resp.text() == "ok 1"  # the form is still readable
    assert (await client.post("/", headers={CSRF_HEADER: token})).status == 200
    assert (await client.delete("/")).status == 403
    assert (await client.post("/", json={CSRF_FIELD: token})).status == 403
    # Another session's token is refused.
    client.session.cookie_jar.update_cookies({"sid": "s2"})
    assert (await client.post("/", data={CSRF_FIELD: token})).status == 403
