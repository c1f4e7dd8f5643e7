"""Keygate's admin UI: accounts, TOTP 2FA, and the life of a user's API keys."""

__all__: list[str] = []
