"""The pytest plugin as another project uses it: a historian tested against the answer key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from iiotbed.recording import AnswerKey, open_recording
from iiotbed.testing import assert_matches_answer_key

pytest_plugins = ["pytester"]
pytestmark = [pytest.mark.network, pytest.mark.timeout(120)]

SHIPPED = Path(__file__).resolve().parents[2] / "tests/data/single-machine-8h.mcap"

#: a user's project: a deliberately simple historian counting good units from Sparkplug B
HISTORIAN_TEST = '''
import threading, uuid
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from iiotbed.protocols.sparkplug.codec import decode_payload
from iiotbed.testing import assert_matches_answer_key

RECORDING = {recording!r}
OFF_BY = {off_by}


class Historian:
    """Keeps the line's GoodCount (names from DBIRTH, aliases after)."""

    def __init__(self, broker_url, prefix):
        host, port = broker_url.removeprefix("mqtt://").split(":")
        self.good, self.alias, self.deaths = None, None, threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=uuid.uuid4().hex)
        self.client.on_message = self.on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect(host, int(port))
        self.client.loop_start()
        self.client.subscribe(prefix + "spBv1.0/#", 1)
        assert subscribed.wait(5)

    def on_message(self, client, userdata, msg):
        if "/NDEATH/" in msg.topic:
            self.deaths.set()
        if not msg.topic.endswith("/line"):
            return
        for m in decode_payload(msg.payload).metrics:
            if "/DBIRTH/" in msg.topic and m.name == "GoodCount":
                self.alias = m.alias
            if m.name == "GoodCount" or (m.alias == self.alias and not m.name):
                self.good = m.long_value + OFF_BY

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()


def test_historian_counts_good_units(iiotbed_broker, iiotbed_replay):
    prefix = "hist-" + uuid.uuid4().hex[:8] + "/"
    historian = Historian(iiotbed_broker, prefix)
    try:
        replay = iiotbed_replay(RECORDING, only=["sparkplug"], topic_prefix=prefix)
        stats = replay.wait(timeout=60)
        assert stats.total > 0
        assert historian.deaths.wait(10)  # the NDEATH comes last
        assert_matches_answer_key({{"good_count": historian.good}}, replay.answer_key)
    finally:
        historian.close()
'''


@pytest.mark.parametrize("off_by", [0, 1])
def test_plugin_replays_into_a_users_test_and_the_oracle_judges_it(
    pytester: pytest.Pytester, off_by: int
) -> None:
    pytester.makepyfile(test_historian=HISTORIAN_TEST.format(recording=str(SHIPPED), off_by=off_by))
    result = pytester.runpytest("--iiotbed-broker", "mqtt://127.0.0.1:1883", "-q")
    if off_by == 0:
        result.assert_outcomes(passed=1)
    else:
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines([
            "*1 KPI(s) disagree with the answer key:*",
            "*line: good_count = 754, the answer key says 753 (exactly) over sim time 0 .. 57600 s*",
        ])  # fmt: skip


def test_embedded_broker_fixture_without_a_broker_option(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IIOTBED_BROKER", raising=False)
    pytester.makepyfile(test_embedded=f'''
from iiotbed.mqtt import parse_broker_url

def test_replay_to_the_embedded_broker(iiotbed_broker, iiotbed_replay):
    assert parse_broker_url(iiotbed_broker).port != 1883
    stats = iiotbed_replay({str(SHIPPED)!r}).wait(timeout=60)
    assert stats.published["sparkplug"] == 251 and stats.sessions == 1
''')  # fmt: skip
    result = pytester.runpytest("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_oracle_names_asset_kpi_and_window() -> None:
    key = open_recording(SHIPPED).answer_key
    assert_matches_answer_key({"good_count": 753, "scrap_count": 8, "oee": key.line["oee"]}, key)
    with pytest.raises(AssertionError) as info:
        assert_matches_answer_key({"good_count": 753, "oee": 0.5}, key)
    assert "line: oee = 0.5" in str(info.value) and "within rel 1e-06" in str(info.value)
    station = next(iter(key.stations))
    with pytest.raises(AssertionError, match=f"{station}: processed = 1"):
        assert_matches_answer_key({"processed": 1}, key, asset=station)
    with pytest.raises(KeyError, match="no asset 'nowhere'"):
        key.differences({}, asset="nowhere")
    assert AnswerKey.from_json(key.to_json()) == key


def test_plugin_import_is_cheap() -> None:
    code = ("import sys, pytest; before = set(sys.modules); import iiotbed.testing.plugin; "
            "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in "
            "('mcap', 'paho', 'asyncua', 'numpy', 'asyncio', 'google')))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"

#: a user's test of a live factory: held until the user's subscriber listens, then run
FACTORY_TEST = '''
import pytest
from iiotbed.protocols.sparkplug.codec import decode_payload
from iiotbed.testing import assert_conformant, assert_matches_answer_key


def good_count(messages):
    """The line's last GoodCount (names from DBIRTH, aliases after)."""
    alias, good = None, None
    for m in messages:
        if not m.topic.endswith("/line"):
            continue
        for metric in decode_payload(m.payload).metrics:
            if "/DBIRTH/" in m.topic and metric.name == "GoodCount":
                alias = metric.alias
            if metric.name == "GoodCount" or (metric.alias == alias and not metric.name):
                good = metric.long_value
    return good


def test_single_machine_live(iiotbed_broker, iiotbed_factory, iiotbed_capture):
    seen = iiotbed_capture("spBv1.0/#")
    factory = iiotbed_factory({single!r}, speed=20000, duration="2h", hold=True)
    ep = factory.endpoints
    assert ep.broker == iiotbed_broker and ep.opcua[0].startswith("opc.tcp://127.0.0.1:")
    assert (ep.sparkplug_group, ep.edge_node, ep.amrs) == ("iiotbed-lab", "teaching-line-1", [])
    assert factory.now == 0.0  # held
    factory.release()
    summary = factory.wait(timeout=90)
    seen.wait_for(lambda ms: any("/NDEATH/" in m.topic for m in ms))
    key = factory.answer_key
    assert key.window[1] == factory.end and key.line["good_count"] > 100
    good = good_count(seen.messages)
    assert_matches_answer_key({{"good_count": good}}, key)
    with pytest.raises(AssertionError, match="line: good_count = .*, the answer key says"):
        assert_matches_answer_key({{"good_count": good + 1}}, key)  # one unit too many
    assert len(seen.messages) == summary.mqtt_messages
    assert_conformant(seen.messages)


def test_amrs_live_conform(iiotbed_factory, iiotbed_capture):
    seen = iiotbed_capture("spBv1.0/#", "uagv/#")
    factory = iiotbed_factory({tcl!r}, speed=10000, duration="30min")
    assert factory.endpoints.vda_manufacturer and len(factory.endpoints.amrs) == 6
    factory.wait(timeout=90)
    vda = [m for m in factory.recording.mqtt_messages(["vda5050"])]
    seen.wait_for(lambda ms: len(ms) >= factory.summary.mqtt_messages)
    assert len(vda) > 20 and any(m.topic.endswith("/order") for m in vda)
    assert_conformant(seen.messages)
'''


def test_factory_fixture_runs_a_live_factory_with_its_answer_key(pytester: pytest.Pytester) -> None:
    single, tcl = SCENARIOS / "single-machine.yaml", SCENARIOS / "tcl-huizhou-5g.yaml"
    pytester.makepyfile(test_live=FACTORY_TEST.format(single=str(single), tcl=str(tcl)))
    # a subprocess: numpy, loaded by the live factory, cannot be imported twice in one process
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
