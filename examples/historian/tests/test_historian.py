"""The historian against iiotbed: a recorded shift replayed, and the factory live."""

from __future__ import annotations

import uuid

import pytest
from historian import Historian

from iiotbed.testing import assert_conformant, assert_matches_answer_key


@pytest.fixture
def prefix() -> str:
    return f"hist-{uuid.uuid4().hex[:8]}/"  # a shared broker: keep to our own topics


def test_counts_of_a_replayed_shift_match_the_answer_key(
    iiotbed_broker, iiotbed_replay, recording, prefix
):
    historian = Historian(iiotbed_broker, prefix)
    try:
        replay = iiotbed_replay(recording, only=["sparkplug"], topic_prefix=prefix)
        stats = replay.wait(timeout=60)
        assert historian.deaths.wait(10)  # the NDEATH comes last
        assert len(historian.seen) == stats.total > 0  # nothing lost on the way
        node, counts = next(iter(historian.counts.items()))
        assert node == "teaching-line-1" and len(historian.counts) == 1
        assert_matches_answer_key(counts, replay.answer_key)  # good_count, scrap_count
        assert_conformant(historian.seen, topic_prefix=prefix)  # what it saw was valid
    finally:
        historian.close()


def test_a_historian_one_unit_off_is_caught(iiotbed_broker, iiotbed_replay, recording, prefix):
    historian = Historian(iiotbed_broker, prefix)
    try:
        replay = iiotbed_replay(recording, only=["sparkplug"], topic_prefix=prefix)
        replay.wait(timeout=60)
        assert historian.deaths.wait(10)
        counts = dict(historian.counts["teaching-line-1"])
        counts["good_count"] += 1
        with pytest.raises(AssertionError, match=r"line: good_count = \d+, the answer key says"):
            assert_matches_answer_key(counts, replay.answer_key)
    finally:
        historian.close()


def test_counts_of_the_live_factory_match_its_answer_key(iiotbed_broker, iiotbed_factory, scenario):
    group = f"hist-{uuid.uuid4().hex[:8]}"  # a shared broker: our own Sparkplug group
    historian = Historian(iiotbed_broker, group=group)  # subscribed before the births
    try:
        factory = iiotbed_factory(scenario, speed=20000, duration="2h", sparkplug_group=group)
        factory.wait(timeout=120)
        assert historian.deaths.wait(10)
        node = factory.endpoints.edge_node
        assert_matches_answer_key(historian.counts[node], factory.answer_key)
        assert_conformant(historian.seen, protocols=["sparkplug"])
    finally:
        historian.close()
