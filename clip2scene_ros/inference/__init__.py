"""inference."""

__all__: list[str] = []
