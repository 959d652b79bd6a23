"""Rebirth requests during a replay, answered as a live edge node answers them.

A Sparkplug host that missed the births (it subscribed late, or lost track of ``seq``)
publishes NCMD ``Node Control/Rebirth`` = true to the edge node. Each replayed edge node
subscribes to its NCMD topic; :class:`Rebirths` notes a request and, between two batches,
hands the replay the node's new NBIRTH and DBIRTHs carrying the values its session has
sent so far (:func:`.resequence.rebirth`): ``seq`` 0 at NBIRTH as Sparkplug B 3.0 asks,
``bdSeq`` the session's. The recorded messages that follow are renumbered on from there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from iiotbed.protocols.sparkplug.codec import NAMESPACE, decode_payload
from iiotbed.recording.resequence import Outgoing, rebirth, rebirth_alias, rebirth_requested

if TYPE_CHECKING:
    from iiotbed.mqtt import Message

__all__ = ["Rebirths"]


class Rebirths:
    """Requests per edge node (the replay's client names ``spb:<group>/<node>``)."""

    def __init__(self, topic_prefix: str = "") -> None:
        self.topic_prefix = topic_prefix
        self.answered = 0
        self.wake = asyncio.Event()  # set by a request: a paced replay stops waiting
        self._pending: set[str] = set()
        self._born_at: dict[str, int] = {}  # index (in the pass) of the session's NBIRTH
        self._alias: dict[str, int | None] = {}  # the NBIRTH's alias of the Rebirth metric
        self._next_seq: dict[str, int] = {}  # after a rebirth: the seq of the next message

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def subscriptions(self, client: str) -> list[tuple[str, int]]:
        """What the client of ``client`` subscribes to: an edge node its NCMD topic."""
        if not client.startswith("spb:"):
            return []
        group, node = client[4:].split("/", 1)
        return [(f"{self.topic_prefix}{NAMESPACE}/{group}/NCMD/{node}", 1)]

    def listener(self, client: str) -> Callable[[Message], None]:
        """The ``on_message`` of ``client``'s connection."""

        def on_message(msg: Message) -> None:
            if client in self._born_at and rebirth_requested(msg.payload, self._alias.get(client)):
                self._pending.add(client)
                self.wake.set()

        return on_message

    def sending(self, index: int, o: Outgoing) -> bytes:
        """``o`` (at ``index`` in the pass) goes out now: its payload, renumbered when a
        rebirth came before it in this session."""
        if o.protocol != "sparkplug":
            return o.payload
        c = o.client
        if "/NBIRTH/" in o.topic:
            self._born_at[c] = index
            self._alias[c] = rebirth_alias(o.payload)
            self._next_seq.pop(c, None)  # the recorded numbering starts over: it fits again
            return o.payload
        if "/NDEATH/" in o.topic:
            self._born_at.pop(c, None)
            self._next_seq.pop(c, None)
            self._pending.discard(c)
            return o.payload
        seq = self._next_seq.get(c)
        if seq is None:
            return o.payload
        payload = decode_payload(o.payload)
        payload.seq = seq
        self._next_seq[c] = (seq + 1) % 256
        return payload.SerializeToString(deterministic=True)

    def answers(self, sent: Sequence[Outgoing], upto: int) -> list[list[Outgoing]]:
        """The births answering every pending request (``sent[:upto]`` went out), one list
        per edge node; the messages after them are renumbered from here."""
        out = []
        for c in sorted(self._pending):
            start = self._born_at.get(c)
            if start is None:
                continue  # its session ended meanwhile: the next NBIRTH answers
            history = [o for o in sent[start:upto] if o.client == c]
            births = rebirth(history, history[-1].log_ns // 1_000_000)
            if births:
                out.append(births)
                self._next_seq[c] = len(births) % 256
                self.answered += 1
        self._pending.clear()
        self.wake.clear()
        return out
