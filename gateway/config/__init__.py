"""Settings, the route table and its YAML loader, TLS."""

__all__: list[str] = []
