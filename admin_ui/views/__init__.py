"""Request handlers, one module per area."""

__all__: list[str] = []
