"""Sparkplug B 3.0 wire format (:mod:`.codec`) and the specification's protobuf schema."""

__all__: list[str] = []
