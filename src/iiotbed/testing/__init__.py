"""Helpers for other projects' test suites: recorded runs and the answer key."""
