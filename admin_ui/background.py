"""Work a page starts but does not wait for (e.g. issuing and mailing a reset link), kept
until it ends so that shutting down finishes it instead of dropping it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from aiohttp import web

__all__ = ["BACKGROUND_KEY", "Background"]

log = logging.getLogger(__name__)


class Background:
    """A set of running tasks; `aclose` waits for them (up to a bound), then cancels."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(self._run(work, name), name=name)
        self._tasks.add(task)  # a strong reference: the loop keeps only weak ones
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _run(work: Coroutine[Any, Any, None], name: str) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("background work %r failed", name)

    async def aclose(self, timeout: float = 10.0) -> None:
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("%d background task(s) cancelled at shutdown", len(pending))
            await asyncio.wait(pending)


BACKGROUND_KEY: web.AppKey[Background] = web.AppKey("background", Background)
