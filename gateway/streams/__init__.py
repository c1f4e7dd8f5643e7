"""WebSocket streams: the client's upgrade, its key and subscriptions checked as REST checks
requests, and the stream relayed to and from the exchange's own."""

__all__: list[str] = []
