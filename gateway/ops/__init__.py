"""Running the stack: the dev stack, embedded servers, runtime resolution, support."""

__all__: list[str] = []
