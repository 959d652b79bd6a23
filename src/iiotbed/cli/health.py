"""Commands: health."""
