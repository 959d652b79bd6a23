"""Commands: lab."""
