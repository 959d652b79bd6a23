"""The secure MQTT profile against a private Mosquitto started with the generated secrets:
TLS only, a login per client, and an ACL per role that the broker enforces (and we count)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from iiotbed.errors import ConnectorError
from iiotbed.mqtt import BrokerRefused, Message, MqttConnection, parse_broker_url
from iiotbed.platform.broker import EmbeddedBroker
from iiotbed.security import SecretsDir, generate

pytestmark = [pytest.mark.timeout(60), pytest.mark.usefixtures("need_mosquitto")]


def run(main: Callable[[EmbeddedBroker], Awaitable[None]], secrets: SecretsDir) -> None:
    async def go() -> None:
        async with EmbeddedBroker("mosquitto", secrets=secrets) as broker:
            await main(broker)

    asyncio.run(go())


async def until(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.02)


def conn(url: str, client_id: str, got: list[Message] | None = None, **kw: object) -> MqttConnection:
    sink = got if got is not None else []
    return MqttConnection(url, client_id=client_id, on_message=sink.append, **kw)  # type: ignore[arg-type]


def test_plain_tcp_is_refused_on_the_tls_listener(secrets_dir: SecretsDir) -> None:
    async def main(broker: EmbeddedBroker) -> None:
        plain = f"mqtt://127.0.0.1:{broker.port}"
        started = time.monotonic()
        with pytest.raises(ConnectorError, match="before its CONNACK"):
            async with conn(plain, "iiotbed-gw-plain", connect_timeout=10):
                pass
        # refused at once, not after the connect timeout
        assert time.monotonic() - started < 5

    run(main, secrets_dir)


def test_a_wrong_password_is_refused_once_and_never_shown(secrets_dir: SecretsDir) -> None:
    async def main(broker: EmbeddedBroker) -> None:
        url = broker.url_for("gateway").replace(secrets_dir.password("gateway"), "not-it-x9")
        with pytest.raises(BrokerRefused) as info:
            async with conn(url, "iiotbed-gw-wrong"):
                pass
        message = str(info.value)
        assert "not-it-x9" not in message
        assert f"mqtts://gateway@127.0.0.1:{broker.port}" in message
        assert "not authorised" in message or "bad user name" in message
        # a background start stops too: wait_connected raises instead of retrying forever
        c = conn(url, "iiotbed-gw-wrong-bg", connect_in_background=True, backoff_initial=0.05)
        async with c:
            with pytest.raises(BrokerRefused):
                async with asyncio.timeout(5):
                    await c.wait_connected()
            await asyncio.sleep(0.3)  # a retry loop would have tried again by now
            assert c.stats.connects == 0
            assert c.refused is not None
        # one CONNACK per attempt: the foreground one and the background one, no retries
        assert broker.log_text().count("Sending CONNACK") == 2

    run(main, secrets_dir)


def test_anonymous_is_refused(secrets_dir: SecretsDir) -> None:
    async def main(broker: EmbeddedBroker) -> None:
        url = f"mqtts://127.0.0.1:{broker.port}?ca={secrets_dir.ca_cert}"
        with pytest.raises(BrokerRefused, match="anonymous"):
            async with conn(url, "someone"):
                pass

    run(main, secrets_dir)


def test_a_certificate_from_another_ca_is_refused(secrets_dir: SecretsDir, other_ca: Path) -> None:
    async def main(broker: EmbeddedBroker) -> None:
        url = broker.url_for("gateway").split("?")[0] + f"?ca={other_ca}"
        with pytest.raises(BrokerRefused, match="not signed by the CA"):
            async with conn(url, "iiotbed-gw-ca"):
                pass

    run(main, secrets_dir)


def test_an_amr_cannot_write_another_amrs_order(secrets_dir: SecretsDir) -> None:
    order = f"uagv/v2/acme-{uuid.uuid4().hex[:6]}/amr-02/order"

    async def main(broker: EmbeddedBroker) -> None:
        got: list[Message] = []
        # one URL for the devices process: each client logs in by its client id
        url = broker.url
        assert "?secrets=" in url
        async with (
            conn(url, "iiotbed-acme-amr-02", got, subscriptions=[(order, 1)]) as amr2,
            conn(url, "iiotbed-acme-amr-01") as amr1,
            conn(url, "iiotbed-master-acme") as master,
        ):
            assert amr2.connected and amr1.connected and master.connected
            await asyncio.sleep(0.2)  # the SUBACK
            before = broker.denied()
            # Mosquitto still PUBACKs the denied QoS 1 publish: the sender cannot tell
            await amr1.publish_acked(order, b'{"from": "amr-01"}')
            await master.publish_acked(order, b'{"from": "master"}')
            await until(lambda: len(got) >= 1, 5, "the master's order")
            await until(lambda: broker.denied() == before + 1, 5, "the denial in the log")
            await asyncio.sleep(0.1)
            assert [m.payload for m in got] == [b'{"from": "master"}']

    run(main, secrets_dir)


def test_a_device_cannot_publish_into_the_uns(secrets_dir: SecretsDir) -> None:
    topic = f"uns/acme-{uuid.uuid4().hex[:6]}/line-1/oee"

    async def main(broker: EmbeddedBroker) -> None:
        got: list[Message] = []
        async with (
            conn(broker.url_for("ingest"), "iiotbed-platform-t", got, subscriptions=[(topic, 1)]),
            conn(broker.url_for("edge"), "iiotbed-acme-line-1") as edge,
            conn(broker.url_for("gateway"), "iiotbed-gw-uns") as gateway,
        ):
            await asyncio.sleep(0.2)
            before = broker.denied()
            await edge.publish_acked(topic, b"9.99")
            await gateway.publish_acked(topic, b"0.5")
            await until(lambda: len(got) >= 1, 5, "the gateway's sample")
            await until(lambda: broker.denied() == before + 1, 5, "the denial in the log")
            assert [m.payload for m in got] == [b"0.5"]

    run(main, secrets_dir)


def test_our_own_password_hashes_work_in_mosquitto(tmp_path: Path) -> None:
    """Without mosquitto_passwd the file is hashed here, in Mosquitto 2's PBKDF2-SHA512 format."""
    secrets = generate(tmp_path / "s", amrs=[], passwd_tool="")
    assert all("$7$101$" in line for line in secrets.password_file.read_text().splitlines())

    async def main(broker: EmbeddedBroker) -> None:
        async with conn(broker.url_for("observer"), "iiotbed-obs") as c:
            assert c.connected
        wrong = broker.url_for("observer").replace(secrets.password("observer"), "x" * 12)
        with pytest.raises(BrokerRefused):
            async with conn(wrong, "iiotbed-obs-2"):
                pass

    run(main, secrets)


def test_broker_urls_parse_and_never_show_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    u = parse_broker_url("mqtts://gw:p%40ss@broker-it?ca=/s/ca.pem")
    assert (u.host, u.port, u.tls, u.username, u.password, u.ca) == (
        "broker-it", 8883, True, "gw", "p@ss", Path("/s/ca.pem"))  # fmt: skip
    assert str(u) == "mqtts://gw@broker-it:8883" and "p@ss" not in repr(u)
    monkeypatch.setenv("IIOTBED_MQTT_CA", "/env/ca.pem")
    assert parse_broker_url("mqtts://h").ca == Path("/env/ca.pem")
    assert parse_broker_url("mqtts://h?ca=/q.pem").ca == Path("/q.pem")  # the URL wins
    assert parse_broker_url("mqtt://h").port == 1883
    for bad, why in (
        ("mqtt://h?ca=/x.pem", "need TLS"),
        ("mqtts://h?cafile=/x.pem", "cafile"),
        ("mqtts://u:s3cr@h?ca=", "ca=FILE"),
        ("http://u:s3cr@h", "not supported"),
    ):
        with pytest.raises(ConnectorError, match=why) as info:
            parse_broker_url(bad)
        assert "s3cr" not in str(info.value)


def test_the_ingests_presence_reaches_the_gateway_and_only_from_ingest(
    secrets_dir: SecretsDir,
) -> None:
    """The UNS hand-over under the ACL: ingest writes its presence, the gateway reads it; a
    device cannot fake an ingest's presence (the gateway would hold or release on it)."""
    status = f"uns/_ingest/iiotbed-platform-{uuid.uuid4().hex[:6]}/status"

    async def main(broker: EmbeddedBroker) -> None:
        got: list[Message] = []
        async with (
            conn(broker.url_for("gateway"), "iiotbed-gw-uns", got,
                 subscriptions=[("uns/_ingest/+/status", 1)]),  # fmt: skip
            conn(broker.url_for("ingest"), "iiotbed-platform-t") as ingest,
            conn(broker.url_for("edge"), "iiotbed-acme-line-1") as edge,
        ):
            await asyncio.sleep(0.2)
            before = broker.denied()
            await edge.publish_acked(status, b"online")
            await ingest.publish_acked(status, b"offline")
            await until(lambda: len(got) >= 1, 5, "the ingest's presence")
            await until(lambda: broker.denied() == before + 1, 5, "the denial in the log")
            assert [m.payload for m in got] == [b"offline"]

    run(main, secrets_dir)
