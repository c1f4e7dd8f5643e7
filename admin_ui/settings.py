"""The settings the admin UI runs with, under the app key its handlers read them by."""

from __future__ import annotations

from aiohttp import web

from gateway.config.settings import Settings

__all__ = ["SETTINGS_KEY"]

SETTINGS_KEY: web.AppKey[Settings] = web.AppKey("settings", Settings)
