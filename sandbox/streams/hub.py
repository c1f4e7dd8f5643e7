"""All open stream sessions: the market tick, heartbeats, and the account events' fan-out.

Each tick renders every subscribed part once and hands the same text to every session that
subscribed to it; each account event is rendered once per channel for all of the account's
sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from aiohttp import WSCloseCode

from ..clock import now
from ..events import AccountEvent
from ..ledger import Exchange
from .account_feed import account_update, trading_messages
from .market_feed import Part, render_update
from .messages import encode, heartbeat
from .session import StreamSession

__all__ = ["StreamHub"]


class StreamHub:
    """The sandbox's stream server state; `exchange` reports its account events here."""

    __slots__ = ("_by_account", "_sessions", "_tasks", "exchange", "heartbeat", "interval", "tick")

    def __init__(self, exchange: Exchange, *, interval: float, heartbeat: float) -> None:
        self.exchange = exchange
        self.interval = interval
        self.heartbeat = heartbeat
        self.tick = 0  # the number of the next market tick: ticks 0 .. tick-1 were sent
        self._sessions: set[StreamSession] = set()
        self._by_account: dict[str, set[StreamSession]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        exchange.observer = self.on_account_event

    @property
    def sessions(self) -> frozenset[StreamSession]:
        return frozenset(self._sessions)

    def attach(self, session: StreamSession) -> None:
        self._sessions.add(session)
        account_id = session.identity.account_id
        if account_id is not None:
            self._by_account.setdefault(account_id, set()).add(session)

    def detach(self, session: StreamSession) -> None:
        self._sessions.discard(session)
        account_id = session.identity.account_id
        peers = self._by_account.get(account_id) if account_id is not None else None
        if account_id is not None and peers is not None:
            peers.discard(session)
            if not peers:
                del self._by_account[account_id]

    def on_account_event(self, account_id: str, event: AccountEvent) -> None:
        """Send `event` to the account's ACCOUNT_HISTORY and TRADING subscribers."""
        history: str | None = None
        trading: list[str] | None = None
        for session in list(self._by_account.get(account_id, ())):
            if "ACCOUNT_HISTORY" in session.subscriptions:
                if history is None:
                    history = encode(account_update(account_id, event))
                session.send_text(history)
            if "TRADING" in session.subscriptions:
                if trading is None:
                    trading = [encode(message) for message in trading_messages(event)]
                for text in trading:
                    session.send_text(text)

    def send_tick(self) -> None:
        """Send market tick `self.tick` to every public subscription, then count it."""
        tick, moment = self.tick, now()
        rendered: dict[Part, str] = {}
        for session in list(self._sessions):
            for parts in session.parts.values():
                for part in parts:
                    text = rendered.get(part)
                    if text is None:
                        text = rendered[part] = encode(render_update(part, tick, moment))
                    session.send_text(text)
        self.tick = tick + 1

    def send_heartbeat(self) -> None:
        text = encode(heartbeat())
        for session in list(self._sessions):
            session.send_text(text)

    def drop(self, *, is_abrupt: bool, code: int, account_id: str | None = None) -> int:
        """End the sessions (of `account_id`, or all) as an upstream failure would: abruptly
        with no close frame, or with CONNECTION_CLOSING and close `code`. Returns how many."""
        dropped = 0
        for session in list(self._sessions):
            if account_id is not None and session.identity.account_id != account_id:
                continue
            if is_abrupt:
                session.abort()
            else:
                session.close(code, "dropped by the sandbox")
            dropped += 1
        return dropped

    async def _every(self, seconds: float, action: Callable[[], None]) -> None:
        # Paced by the loop's clock from a fixed start, so ticks do not drift; after a stall
        # the schedule restarts rather than sending a burst.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            action()
            deadline += seconds
            if deadline < loop.time():
                deadline = loop.time() + seconds

    def start(self) -> None:
        """Start the tick and heartbeat loops (on the running event loop)."""
        self._tasks = [
            asyncio.create_task(self._every(self.interval, self.send_tick)),
            asyncio.create_task(self._every(self.heartbeat, self.send_heartbeat)),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def shutdown(self) -> None:
        """Tell every session the exchange is going away, and close it."""
        for session in list(self._sessions):
            session.close(WSCloseCode.GOING_AWAY, "shutting down")
