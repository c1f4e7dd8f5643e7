"""GET /streams: the WebSocket upgrade and the session's receive loop."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import WSMsgType, web

from ..appkeys import RECORDER_KEY, STREAM_HUB_KEY
from .dispatch import handle_text
from .messages import error
from .session import Identity, StreamSession

__all__ = ["MAX_MESSAGE_SIZE", "STREAM_PATH", "stream_handler"]

STREAM_PATH = "/streams"
MAX_MESSAGE_SIZE = 1 << 20  # larger messages are refused with close 1009
_CLOSE_TIMEOUT = 2.0  # how long a close waits for the client's close frame


async def stream_handler(request: web.Request) -> web.WebSocketResponse:
    """Serve one stream session for the account the gateway names on the upgrade request."""
    hub = request.app[STREAM_HUB_KEY]
    ws = web.WebSocketResponse(timeout=_CLOSE_TIMEOUT, max_msg_size=MAX_MESSAGE_SIZE)
    await ws.prepare(request)
    record = request.app[RECORDER_KEY].open_stream(request)
    session = StreamSession(ws, request.transport, Identity.of(request.headers), record)
    hub.attach(session)
    writer = asyncio.create_task(session.run_writer())
    try:
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                record.text(message.data)
                handle_text(hub, session, message.data)
            elif message.type is WSMsgType.BINARY:
                record.binary(message.data)
                session.send(error("MALFORMED_JSON", "messages are JSON in text frames"))
            else:  # ERROR: the connection failed
                break
    finally:
        hub.detach(session)
        session.finish()
        # The writer may be closing the session itself; give it the time a close takes.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(writer, _CLOSE_TIMEOUT * 2)
        record.closed(ws.close_code)
    return ws
