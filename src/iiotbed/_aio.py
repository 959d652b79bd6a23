"""The one ``async with`` lifecycle: open on entry, close on exit, the body's exception passes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self, TypeAlias

__all__ = ["AsyncClosing", "ExcInfo"]

ExcInfo: TypeAlias = tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
"""What ``__aexit__`` is handed, for ``async def __aexit__(self, *exc_info: *ExcInfo)``."""


class AsyncClosing(ABC):
    """Opened on entering ``async with`` (:meth:`open`), closed on leaving it (:meth:`close`).

    Leaving returns None whatever the body did, so its exception passes through unchanged:
    never suppressed, never wrapped. A class whose entry does more overrides ``__aenter__``.
    """

    async def open(self) -> None:  # noqa: B027 - an optional hook, empty on purpose
        """Acquire what the object holds while open; nothing by default."""

    @abstractmethod
    async def close(self) -> None:
        """Release what the object holds; also called after a failed or cancelled body."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: *ExcInfo) -> None:
        await self.close()
