"""HTTP vocabulary shared by the data plane and the admin UI: errors, paths, client IPs."""

__all__: list[str] = []
