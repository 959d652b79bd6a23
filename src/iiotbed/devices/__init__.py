"""Device side of iiotbed: the SimPy model (``sim``) and its protocol faces."""

__all__: list[str] = []
