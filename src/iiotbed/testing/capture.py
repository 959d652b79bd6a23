"""A subscriber for synchronous tests: what a broker delivers on some topics, in order.

:class:`Capture` subscribes in a background thread (its own event loop) and returns from
``start()`` only once the broker has the subscriptions (a probe it publishes to itself
came back), so nothing published afterwards is missed. ``messages`` grows as they
arrive; feed it to the conformance checkers or to your own assertions.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from iiotbed.testing.replay import _LoopThread

if TYPE_CHECKING:
    import asyncio

    from iiotbed.mqtt import Message

__all__ = ["Capture"]


class Capture(_LoopThread):
    """Every message ``broker`` delivers on ``filters`` (QoS 1), kept in ``messages``."""

    def __init__(self, broker: str, filters: Iterable[str], *, qos: int = 1) -> None:
        super().__init__("iiotbed-capture")
        self.broker = broker
        self.filters = list(filters)
        if not self.filters:
            raise ValueError("give at least one topic filter to capture, e.g. 'spBv1.0/#'")
        self.qos = qos
        self.messages: list[Message] = []
        self._probe = f"iiotbed-capture/{secrets.token_hex(6)}"
        self._subscribed = threading.Event()

    def start(self, timeout: float = 10.0) -> None:
        """Connect and subscribe; returns once the broker has the subscriptions."""
        super().start()
        deadline = time.monotonic() + timeout
        while not self._subscribed.wait(0.05) and not self.done.is_set():  # e.g. no broker
            if time.monotonic() > deadline:
                break
        if not self._subscribed.is_set() or self.error is not None:
            self.halt()
            if self.error is not None:
                raise self.error
            raise TimeoutError(f"capturing {self.filters} on {self.broker}: not subscribed "
                               f"within {timeout:g} s")  # fmt: skip

    async def body(self, halt: asyncio.Event) -> None:
        from iiotbed.mqtt import MqttConnection

        def on_message(msg: Message) -> None:
            if msg.topic == self._probe:
                self._subscribed.set()  # the broker took the subscriptions before it
            else:
                self.messages.append(msg)

        subs = [(f, self.qos) for f in self.filters] + [(self._probe, 1)]
        conn = MqttConnection(self.broker, client_id=f"iiotbed-capture-{secrets.token_hex(4)}",
                              on_message=on_message, subscriptions=subs)  # fmt: skip
        async with conn:
            await conn.publish_acked(self._probe, b"")
            await halt.wait()

    def wait_for(self, until: Callable[[Sequence[Message]], bool], timeout: float = 10.0) -> None:
        """Block until ``until(messages)`` holds; ``TimeoutError`` saying how many came."""
        deadline = time.monotonic() + timeout
        while not until(self.messages):
            if self.error is not None:
                raise self.error
            if time.monotonic() > deadline:
                raise TimeoutError(f"captured {len(self.messages)} message(s) on {self.filters} "
                                   f"in {timeout:g} s; the condition still fails")  # fmt: skip
            time.sleep(0.02)

    def topics(self, *needles: str) -> list[Message]:
        """The messages whose topic contains every one of ``needles``."""
        return [m for m in self.messages if all(n in m.topic for n in needles)]

    def stop(self) -> None:
        """Unsubscribe and disconnect (``messages`` stays)."""
        self.halt()
