"""Error types of iiotbed: one base, translated at each boundary.

::

    IiotbedError
    ├── ScenarioError      a scenario file is unreadable or invalid (path, line)
    ├── SimulationError    the model reached an impossible state
    ├── ConnectorError     a protocol peer (broker, OPC UA server) misbehaved (endpoint)
    └── StorageError       a store could not be opened or written (url)

Every message says the value, the place and the fix.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "ConnectorError",
    "IiotbedError",
    "ScenarioError",
    "ScenarioIssue",
    "SimulationError",
    "StorageError",
]


class IiotbedError(Exception):
    """Base of every error iiotbed raises on purpose."""


class ScenarioIssue:
    """One problem in a scenario file: where it is and what is wrong."""

    __slots__ = ("line", "location", "message", "path")

    def __init__(self, path: Path | None, line: int | None, location: str, message: str) -> None:
        self.path = path
        self.line = line
        self.location = location
        self.message = message

    def __str__(self) -> str:
        where = str(self.path) if self.path is not None else "<scenario>"
        if self.line is not None:
            where += f":{self.line}"
        loc = f" {self.location}:" if self.location else ""
        return f"{where}:{loc} {self.message}"


class ScenarioError(IiotbedError):
    """A scenario file could not be read or does not validate; carries every issue found."""

    def __init__(self, issues: list[ScenarioIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))

    @property
    def path(self) -> Path | None:
        return self.issues[0].path if self.issues else None

    @property
    def line(self) -> int | None:
        return self.issues[0].line if self.issues else None

    @classmethod
    def single(
        cls, path: Path | None, line: int | None, message: str, location: str = ""
    ) -> ScenarioError:
        return cls([ScenarioIssue(path, line, location, message)])


class SimulationError(IiotbedError):
    """The simulation reached a state its model forbids (a bug, not a user error)."""


class ConnectorError(IiotbedError):
    """A protocol endpoint failed; ``endpoint`` names it (URL, topic or node id)."""

    def __init__(self, message: str, *, endpoint: str | None = None) -> None:
        self.endpoint = endpoint
        super().__init__(message)


class StorageError(IiotbedError):
    """A store could not be opened, read or written; ``url`` names it."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        self.url = url
        super().__init__(message)
