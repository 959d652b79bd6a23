"""Error types of iiotbed: one base, translated at each boundary.

::

    IiotbedError
    ├── ScenarioError      a scenario file is unreadable or invalid (path, line; every issue)
    ├── SimulationError    the model reached an impossible state (a bug, not a user error)
    ├── CommandRefused     a machine or AMR refused a command in its present state (target, command)
    ├── ConnectorError     a protocol peer (broker, OPC UA server) misbehaved (endpoint)
    ├── UnsError           a UNS topic or payload breaks the schema (reason, field, topic)
    ├── StorageError       a store could not be opened, read or written (url)
    │   └── EventLogError  a line of an event log is not a record (path, line)
    └── QueryError         the platform cannot answer a query as asked
        └── NotFound       the run, asset or identifier asked for is not known

Every message says the value, the place and the fix. Each boundary maps these once:
the CLI to exit codes (2 for usage), the HTTP API to 400/404/503, OPC UA to status codes
(``CommandRefused`` -> ``BadInvalidState`` / ``BadOutOfRange``), Sparkplug B and VDA 5050
to a refused command counted and logged (VDA 5050: an error in the AMR's ``state``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "CommandRefused",
    "ConnectorError",
    "EventLogError",
    "IiotbedError",
    "NotFound",
    "QueryError",
    "ScenarioError",
    "ScenarioIssue",
    "SimulationError",
    "StorageError",
    "UnsError",
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


class EventLogError(StorageError):
    """A line of an event log is not a record; ``path`` and ``line`` say where."""

    def __init__(self, message: str, *, path: Path, line: int) -> None:
        self.path = path
        self.line = line
        super().__init__(f"{path}:{line}: {message}", url=str(path))


class CommandRefused(IiotbedError):
    """A command cannot be carried out now; ``target`` and ``command`` say which.

    ``out_of_range`` marks a value outside its allowed range (OPC UA ``BadOutOfRange``)
    rather than a command the present state forbids (``BadInvalidState``).
    """

    def __init__(
        self, message: str, *, target: str, command: str, out_of_range: bool = False
    ) -> None:
        self.target = target
        self.command = command
        self.out_of_range = out_of_range
        super().__init__(f"{target}: {command} refused: {message}")


class UnsError(IiotbedError):
    """A UNS topic or payload is invalid; ``reason`` says why, ``field``/``topic`` where."""

    def __init__(self, reason: str, *, field: str | None = None, topic: str | None = None) -> None:
        self.reason = reason
        self.field = field
        self.topic = topic
        where = f" (field {field!r})" if field else ""
        on = f" on topic {topic!r}" if topic else ""
        super().__init__(f"invalid UNS message{on}{where}: {reason}")


class QueryError(IiotbedError):
    """The platform cannot answer the query as asked; the message says what to change."""


class NotFound(QueryError):
    """The run, asset or identifier asked for is not known."""
