"""Commands: security."""
