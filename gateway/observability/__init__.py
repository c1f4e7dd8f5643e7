"""What the gateway tells ops: outcomes, metrics, access log, status, readiness."""

__all__: list[str] = []
