"""Replays and brokers for synchronous tests: each runs its own event loop in a thread.

:class:`ReplayHandle` replays a recording in the background (``wait()`` for the end,
``stop()`` to end early) and carries the recording's answer key; :class:`BackgroundBroker`
runs an embedded MQTT broker on a free port. Neither needs pytest-asyncio. Heavy modules
(mcap, paho, the KPI engine) load when one is created, never at import.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio

    from iiotbed.recording import AnswerKey, Recording
    from iiotbed.recording.replay import ReplayOptions, ReplayStats

__all__ = ["BackgroundBroker", "ReplayHandle"]


class _LoopThread:
    """A coroutine run to its end in a daemon thread; ``halt`` asks it to stop."""

    def __init__(self, name: str) -> None:
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._halt: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(30)

    def halt(self, timeout: float = 30.0) -> None:
        loop, halt = self._loop, self._halt
        if loop is not None and halt is not None and not self.done.is_set():
            loop.call_soon_threadsafe(halt.set)
        self._thread.join(timeout)

    async def body(self, halt: asyncio.Event) -> None:
        raise NotImplementedError

    def _main(self) -> None:
        import asyncio  # here, not at the top: the plugin's import stays cheap

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._halt = asyncio.Event()
            self._ready.set()
            await self.body(self._halt)

        try:
            asyncio.run(main())
        except BaseException as exc:  # handed to the test's thread by wait()
            self.error = exc
        finally:
            self._ready.set()
            self.done.set()


class ReplayHandle(_LoopThread):
    """A recording being replayed to ``options.broker`` in a background thread."""

    def __init__(self, recording: Path | str, options: ReplayOptions) -> None:
        from iiotbed.recording import open_recording
        from iiotbed.recording.replay import ReplayStats

        super().__init__("iiotbed-replay")
        self.recording: Recording = open_recording(Path(recording))
        self.options = options
        self.stats: ReplayStats = ReplayStats()

    @property
    def answer_key(self) -> AnswerKey:
        """The simulator's KPIs over the recorded window."""
        return self.recording.answer_key

    async def body(self, halt: asyncio.Event) -> None:
        from iiotbed.recording.replay import replay

        await replay(self.recording, self.options, stop=halt, stats=self.stats)

    def wait(self, timeout: float = 60.0) -> ReplayStats:
        """Block until every message is published (acknowledged); the replay's figures."""
        if not self.done.wait(timeout):
            raise TimeoutError(f"the replay of {self.recording.path} is still running after "
                               f"{timeout:g} s ({self.stats.total} messages so far)")  # fmt: skip
        if self.error is not None:
            raise self.error
        return self.stats

    def stop(self) -> None:
        """End the replay now (its sessions close; nothing more is published)."""
        self.halt()


class BackgroundBroker(_LoopThread):
    """An embedded MQTT broker (Mosquitto when installed, else amqtt) on a free port."""

    def __init__(self) -> None:
        super().__init__("iiotbed-broker")
        self.url = ""
        self._up = threading.Event()

    def start(self) -> None:
        super().start()
        self._up.wait(30)
        if self.error is not None:
            raise self.error
        if not self.url:
            raise TimeoutError("the embedded MQTT broker did not start within 30 s")

    async def body(self, halt: asyncio.Event) -> None:
        from iiotbed.platform.broker import EmbeddedBroker

        try:
            async with EmbeddedBroker() as broker:
                self.url = broker.url
                self._up.set()
                await halt.wait()
        finally:
            self._up.set()
