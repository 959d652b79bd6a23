"""``iiotbed certs``: what it writes, with which modes, and its answers to bad input."""

from __future__ import annotations

import json
import ssl
import stat
from pathlib import Path

from cryptography import x509
from typer.testing import CliRunner

from iiotbed.cli import app

runner = CliRunner()


def test_certs_writes_secrets_only_the_owner_can_read(tmp_path: Path) -> None:
    d = tmp_path / "secrets"
    res = runner.invoke(app, ["certs", "--dir", str(d), "--host", "broker-ot", "--amrs", "3"])
    assert res.exit_code == 0, res.output
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    names = sorted(p.name for p in d.iterdir())
    assert names == sorted(["ca.pem", "ca.key", "broker.pem", "broker.key", "passwd", "acl",
                            "mosquitto.conf", "credentials.json", "secrets.env"])  # fmt: skip
    for p in d.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    cert = x509.load_pem_x509_certificate((d / "broker.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "broker-ot"} <= set(san.get_values_for_type(x509.DNSName))
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    ssl.create_default_context(cafile=str(d / "ca.pem"))  # a CA Python's TLS accepts
    doc = json.loads((d / "credentials.json").read_text())
    users = doc["mqtt"]["users"]
    assert set(users) == {"edge", "amr-01", "amr-02", "amr-03", "vda-master", "gateway",
                          "ingest", "observer"}  # fmt: skip
    assert len({u["password"] for u in users.values()}) == len(users)  # each its own
    passwd = (d / "passwd").read_text()
    assert all(u["password"] not in passwd for u in users.values())  # hashed
    acl = (d / "acl").read_text()
    assert "user amr-02\ntopic write uagv/+/+/amr-02/state" in acl
    assert "topic read uagv/+/+/amr-02/order" in acl and "uagv/+/+/+/order" not in acl.split(
        "user vda-master")[0]  # fmt: skip
    conf = (d / "mosquitto.conf").read_text()
    assert "allow_anonymous false" in conf and f"password_file {d.resolve()}/passwd" in conf


def test_existing_secrets_are_kept_unless_forced(tmp_path: Path) -> None:
    d = tmp_path / "s"
    assert runner.invoke(app, ["certs", "--dir", str(d)]).exit_code == 0
    ca = (d / "ca.pem").read_bytes()
    res = runner.invoke(app, ["certs", "--dir", str(d)])
    assert res.exit_code == 0 and "kept" in res.output
    assert (d / "ca.pem").read_bytes() == ca
    assert runner.invoke(app, ["certs", "--dir", str(d), "--force"]).exit_code == 0
    assert (d / "ca.pem").read_bytes() != ca


def test_conf_dir_names_the_paths_the_broker_sees(tmp_path: Path) -> None:
    d = tmp_path / "s"
    res = runner.invoke(app, ["certs", "--dir", str(d), "--conf-dir", "/mosquitto/secrets"])
    assert res.exit_code == 0
    assert "keyfile /mosquitto/secrets/broker.key" in (d / "mosquitto.conf").read_text()


def test_an_unwritable_directory_exits_2_with_a_message(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    res = runner.invoke(app, ["certs", "--dir", str(blocker / "secrets")])
    assert res.exit_code == 2
    assert "cannot write the secrets to" in res.output and "--dir" in res.output
    assert "Traceback" not in res.output


def test_a_bad_host_exits_2(tmp_path: Path) -> None:
    res = runner.invoke(app, ["certs", "--dir", str(tmp_path / "s"), "--host", "a b"])
    assert res.exit_code == 2 and "'a b' is not a host name" in res.output
