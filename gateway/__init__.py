"""Keygate: an API-key gateway in front of a crypto exchange's REST API."""

__all__: list[str] = []
