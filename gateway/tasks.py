"""Background tasks: one that repeats on a clock, and how one is stopped."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["every", "stop_task"]


def every(interval: float, work: Callable[[], Awaitable[None] | None],
          name: str) -> asyncio.Task[None]:
    """A task that calls `work` (plain or async) every `interval` seconds until cancelled.

    Not at a fixed rate: each wait starts once the previous call has finished, so a slow
    call (a store that hangs until its timeout) never piles up behind itself.
    """
    async def repeat() -> None:
        while True:
            await asyncio.sleep(interval)
            pending = work()
            if pending is not None:
                await pending

    return asyncio.create_task(repeat(), name=name)


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` and wait until it has finished (its `finally` blocks have run)."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
