"""Commands: recording."""
