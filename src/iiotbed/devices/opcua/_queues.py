"""Keep asyncua's monitored-item queues from discarding the changes we write.

asyncua honours a client's requested queue size exactly, but when a node changes more
often than that between two publishes it drops the oldest value silently (no Overflow
bit, OPC 10000-4 5.13.1.5). Between publishes the pacer may hand a server thousands of
records at once (a catch-up after the loop was busy: 5,630 records, 3,700 sim s, in one
batch at 3000x), so a busy station's state changed 100+ times in one publishing interval
and the gateway never saw some of its changes. :class:`QueueGuard` checks, before each
write, whether a queue of that node is full; if so it publishes now and waits for room.

A client that asked for a queue of 1 wants the newest value only (sampling): not
guarded. A subscription whose client does not take its notifications within
``wait_s``, or whose connection is gone (asyncua keeps it for a possible reconnect), is
left to discard: the devices must not stop for it. A change it then drops that no
healthy subscription got either (a collector's new session) counts in
:attr:`QueueGuard.lost`.

This reaches into asyncua's server internals (subscriptions, their queues); the pinned
version's behaviour is tested in ``tests/devices/test_opcua_queue_guard.py``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

from asyncua import Server, ua

__all__ = ["QueueGuard"]

_log = logging.getLogger(__name__)

#: how long a write waits for a client to take its queued notifications
WAIT_S: Final = 2.0
_POLL_S: Final = 0.001
_VALUE: Final = ua.AttributeIds.Value

# (internal subscription, monitored item id, queue size) of one guarded item
_Item = tuple[Any, int, int]


class QueueGuard:
    """Waits, before a write, until every guarded queue of the node has room."""

    def __init__(self, server: Server, wait_s: float | None = None) -> None:
        self._server = server
        self._subs: dict[int, Any] = server.iserver.subscription_service.subscriptions
        self.wait_s = WAIT_S if wait_s is None else wait_s
        self.lost = 0  # changes dropped from full queues that no healthy subscription got
        self.waits = 0  # times a write waited for a publish
        self._items: dict[ua.NodeId, list[_Item]] = {}
        self._seen: tuple[tuple[int, int, int], ...] = ()
        self._stalled: set[int] = set()  # ids of subscriptions given up on until drained

    def refresh(self) -> None:
        """Re-read which nodes are monitored (cheap when nothing changed: once per batch)."""
        if self._stalled:  # a client that took all its notifications is waited for again
            subs = self._subs
            self._stalled = {
                s for s in self._stalled if s in subs and subs[s]._triggered_datachanges
            }
        seen = tuple(
            (sid, mis._monitored_item_counter, len(mis._monitored_items))
            for sid, sub in self._subs.items()
            for mis in (sub.monitored_item_srv,)
        )
        if seen == self._seen:
            return
        self._seen = seen
        items: dict[ua.NodeId, list[_Item]] = {}
        for sub in self._subs.values():
            for mid, data in sub.monitored_item_srv._monitored_items.items():
                rv = data.read_value_id
                if rv is None or rv.AttributeId != _VALUE or data.queue_size <= 1:
                    continue
                items.setdefault(rv.NodeId, []).append((sub, mid, data.queue_size))
        self._items = items

    async def write(self, nodeid: ua.NodeId, value: ua.DataValue) -> None:
        """``write_attribute_value`` without a guarded queue discarding a change."""
        items = self._items.get(nodeid)
        if items is not None:
            for sub, mid, size in items:
                if len(sub._triggered_datachanges.get(mid, ())) >= size:
                    await self._write_full(nodeid, value, items)
                    return
        await self._server.write_attribute_value(nodeid, value)

    async def _write_full(self, nodeid: ua.NodeId, value: ua.DataValue, items: list[_Item]) -> None:
        full = [it for it in items if len(it[0]._triggered_datachanges.get(it[1], ())) >= it[2]]
        await self._make_room(full)
        heads = [(q, q[0]) for q in _queues(full) if q]
        await self._server.write_attribute_value(nodeid, value)
        # a queue's head changes only when asyncua drops it (still full: a stalled client);
        # lost when no healthy subscription (a collector's new session) got the change
        stalled = self._stalled
        if all(it[0].data.SubscriptionId in stalled for it in items):
            self.lost += int(any(q[0] is not head for q, head in heads))

    async def _make_room(self, full: list[_Item]) -> None:
        waiting = []
        for it in full:
            sid = it[0].data.SubscriptionId
            if _orphaned(it[0]):  # its client's connection is gone: nobody takes them now
                self._stalled.add(sid)
            elif sid not in self._stalled:
                waiting.append(it)
        if not waiting:
            return
        self.waits += 1
        for sub in {id(it[0]): it[0] for it in waiting}.values():
            # publish now: answered at once if the client has a Publish request waiting,
            # else as soon as its next one arrives (asyncua queues the subscription)
            await sub.publish_results()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        while still := [
            it for it, q in zip(waiting, _queues(waiting), strict=True) if len(q) >= it[2]
        ]:
            if loop.time() >= deadline:
                for it in still:  # not the others: they took theirs
                    self._stalled.add(it[0].data.SubscriptionId)
                _log.warning(
                    "an OPC UA client took no notifications for %.1f s: its full queues now "
                    "drop the oldest changes", self.wait_s,
                )  # fmt: skip
                return
            await asyncio.sleep(_POLL_S)


def _orphaned(sub: Any) -> bool:
    """asyncua keeps a subscription for a while after its client's connection is lost."""
    processor = getattr(sub.pub_request_callback, "__self__", None)
    return bool(getattr(processor, "_closing", False))


def _queues(items: list[_Item]) -> list[list[Any]]:
    return [it[0]._triggered_datachanges.get(it[1], []) for it in items]
