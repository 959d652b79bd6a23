"""Secrets made once per session (``iiotbed certs``' code), and a private secure Mosquitto."""

from __future__ import annotations

from pathlib import Path

import pytest

from iiotbed.platform.broker import find_mosquitto
from iiotbed.security import SecretsDir, generate


@pytest.fixture(scope="session")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> SecretsDir:
    return generate(tmp_path_factory.mktemp("secrets") / "s", amrs=["amr-01", "amr-02"])


@pytest.fixture
def need_mosquitto() -> None:
    if find_mosquitto() is None:
        pytest.skip("the mosquitto binary is not installed (apt-get install mosquitto)")


@pytest.fixture(scope="session")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA that did not sign the broker's certificate."""
    return generate(tmp_path_factory.mktemp("other") / "s", amrs=[]).ca_cert
