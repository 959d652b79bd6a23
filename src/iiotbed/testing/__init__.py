"""Helpers for other projects' test suites: recorded runs and the answer key.

The pytest plugin (:mod:`iiotbed.testing.plugin`, loaded by the ``pytest11`` entry point)
gives the fixtures ``iiotbed_broker``, ``iiotbed_replay``, ``iiotbed_factory`` and
``iiotbed_capture``; this package gives the oracle, :func:`assert_matches_answer_key`,
the conformance checkers (:mod:`.conformance`: Sparkplug B sessions, UNS and VDA 5050
schemas) and the thread-backed :class:`ReplayHandle`, :class:`FactoryHandle` and
:class:`Capture`.
Importing it is cheap: the recording, MQTT and KPI modules load when used.
See ``docs/testing.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from iiotbed.testing.capture import Capture
from iiotbed.testing.conformance import (
    Finding,
    assert_conformant,
    check_sparkplug,
    check_stream,
    check_uns,
    check_vda5050,
)
from iiotbed.testing.factory import FactoryEndpoints, FactoryHandle
from iiotbed.testing.replay import BackgroundBroker, ReplayHandle

if TYPE_CHECKING:
    from iiotbed.recording import AnswerKey

__all__ = [
    "BackgroundBroker",
    "Capture",
    "FactoryEndpoints",
    "FactoryHandle",
    "Finding",
    "ReplayHandle",
    "assert_conformant",
    "assert_matches_answer_key",
    "check_sparkplug",
    "check_stream",
    "check_uns",
    "check_vda5050",
]


def assert_matches_answer_key(
    kpis: Mapping[str, float | None],
    answer_key: AnswerKey,
    *,
    asset: str = "line",
    keys: Iterable[str] | None = None,
    rel: float | None = None,
) -> None:
    """Fail when what a system derived (``kpis`` of ``asset``) disagrees with the answer key:
    counters exactly, the rest within ``rel`` (default 1e-6); the message names every asset,
    KPI and window that disagrees. ``keys``: only these (default: those both know)."""
    __tracebackhide__ = True
    diffs = answer_key.differences(kpis, asset=asset, keys=keys, rel=rel)
    if diffs:
        lines = "\n  ".join(str(d) for d in diffs)
        raise AssertionError(f"{len(diffs)} KPI(s) disagree with the answer key:\n  {lines}")
