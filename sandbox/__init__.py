"""The sandbox exchange: a fake upstream for development and tests."""

from .app import build_sandbox_app

__all__ = ["build_sandbox_app"]
