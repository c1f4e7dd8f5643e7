"""The sandbox exchange's WebSocket streams: the exchange's channels and message shapes."""

__all__: list[str] = []
