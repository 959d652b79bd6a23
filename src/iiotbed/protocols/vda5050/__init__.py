"""VDA 5050 2.1 wire format (:mod:`.messages`) with the official JSON schemas (``schemas/``)."""

__all__: list[str] = []
