"""The dev mailbox's pages: `/dev/mailbox` (HTML) and `/dev/mailbox.json`, on the admin port,
both newest first."""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import Any

from aiohttp import web

from admin_ui.devmail import MAILBOX_KEY
from admin_ui.render import render

__all__ = ["add_mailbox_routes", "mailbox_html", "mailbox_json"]

_URL = re.compile(r"https?://[^\s<>\"']+")


async def mailbox_json(request: web.Request) -> web.Response:
    messages = [asdict(m) for m in request.app[MAILBOX_KEY].messages]
    return web.json_response(messages)


async def mailbox_html(request: web.Request) -> web.Response:
    entries: list[dict[str, Any]] = [
        {"message": m, "links": _URL.findall(m.body)}
        for m in request.app[MAILBOX_KEY].messages
    ]
    return render(request, "dev_mailbox.html", {"entries": entries})


def add_mailbox_routes(app: web.Application) -> None:
    app.router.add_get("/dev/mailbox", mailbox_html, name="dev_mailbox")
    app.router.add_get("/dev/mailbox.json", mailbox_json, name="dev_mailbox_json")
