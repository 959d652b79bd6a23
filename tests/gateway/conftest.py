"""Fixtures of the gateway tests (helpers live in ``gwkit``)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator

import pytest
from gwkit import Mosquitto, free_port


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    exe = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if exe is None:
        pytest.skip("the mosquitto binary is not installed: cannot start a broker to restart")
    m = Mosquitto(exe, free_port())
    m.start()
    yield m
    m.stop()


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:10]
