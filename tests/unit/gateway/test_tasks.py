"""`every` and `stop_task`: the clock every background job of a gateway runs on."""

from __future__ import annotations

import asyncio

from gateway.tasks import every, stop_task


async def test_every_calls_plain_and_async_work_until_stopped() -> None:
    calls: list[str] = []

    async def slow() -> None:
        calls.append("async")
        await asyncio.sleep(0.05)

    plain = every(0.01, lambda: calls.append("plain"), "plain")
    awaited = every(0.01, slow, "awaited")
    await asyncio.sleep(0.2)
    await stop_task(plain)
    await stop_task(awaited)
    plain_calls, async_calls = calls.count("plain"), calls.count("async")
    assert plain_calls >= 5
    # Each wait starts when the previous call has finished: at most 0.2 / 0.06 calls.
    assert 1 <= async_calls <= 4
    assert plain.done() and awaited.done()
    await asyncio.sleep(0.05)
    assert (calls.count("plain"), calls.count("async")) == (plain_calls, async_calls)


async def test_stop_task_waits_for_cleanup_and_accepts_none() -> None:
    cleaned = asyncio.Event()

    async def job() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            await asyncio.sleep(0.01)  # cleanup that itself waits
            cleaned.set()

    task = asyncio.create_task(job())
    await asyncio.sleep(0)
    await stop_task(task)
    assert cleaned.is_set()
    await stop_task(None)
