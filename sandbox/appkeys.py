"""Typed application and request state keys of the sandbox app."""

from __future__ import annotations

from aiohttp import web

from .ledger import Exchange
from .recording import Recorder
from .streams.hub import StreamHub

__all__ = ["EXCHANGE_KEY", "RECORDER_KEY", "STREAM_HUB_KEY"]

EXCHANGE_KEY = web.AppKey("sandbox_exchange", Exchange)
RECORDER_KEY = web.AppKey("sandbox_recorder", Recorder)
STREAM_HUB_KEY = web.AppKey("sandbox_streams", StreamHub)
