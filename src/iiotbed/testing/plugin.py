"""The iiotbed pytest plugin (entry point ``pytest11``)."""
