"""The request pipeline: its context, its steps in order, and forwarding."""

__all__: list[str] = []
