"""Timestamps as the exchange writes them: ISO 8601, UTC, milliseconds, ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["epoch_millis", "iso", "now", "parse_iso"]


def now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


def epoch_millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def parse_iso(text: str) -> datetime | None:
    """Parse a client's ISO 8601 time; a time without a zone is taken as UTC."""
    # A '+' left unencoded in a query string arrives as a space.
    candidate = text.strip().replace(" ", "+")
    try:
        moment = datetime.fromisoformat(candidate)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
