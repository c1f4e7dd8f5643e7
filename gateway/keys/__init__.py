"""API keys: tokens, their lifecycle, accounts and usage."""

__all__: list[str] = []
