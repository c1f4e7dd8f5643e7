"""The data plane's HTTP edge: sockets, the HTTP protocol, connections, workers."""

__all__: list[str] = []
