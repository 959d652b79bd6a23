"""The dashboard in headless Chromium against a running platform fed through Mosquitto."""

from __future__ import annotations

import asyncio
import re
import shutil
import uuid
from pathlib import Path

import pytest

from iiotbed.devices.sim import simulate
from iiotbed.gateway import DurableBuffer, UnsPublisher
from iiotbed.platform.service import Platform
from iiotbed.scenario import load_scenario
from iiotbed.telemetry import Event, Sample

ROOT_DIR = Path(__file__).resolve().parents[2]
ARTIFACT = ROOT_DIR / "artifacts" / "dashboard.png"
BROKER = "mqtt://127.0.0.1:1883"
CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)

pytestmark = [
    pytest.mark.network,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no chromium binary (Debian: apt-get install chromium chromium-driver)",
    ),
]


async def _chromium(url: str, profile: Path, *extra: str) -> str:
    assert CHROMIUM is not None
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # CI runs as root, where the sandbox cannot start
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1400,1100",
        # virtual time lets the page's fetches and a few one-second polls complete
        "--virtual-time-budget=5000",
        *extra,
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode(errors="replace")


def test_dashboard_shows_live_stations_and_oee(tmp_path: Path) -> None:
    scenario = load_scenario(ROOT_DIR / "scenarios" / "single-machine.yaml")
    records = simulate(scenario, 0, duration=12 * 3600.0)  # mid-shift: the machine is live
    root = f"test-{uuid.uuid4().hex[:10]}"

    async def main() -> None:
        async with (
            Platform(
                broker=BROKER,
                store=f"sqlite:///{tmp_path / 'p.db'}",
                port=0,
                scenario=scenario,
                root=root,
            ) as platform,
            DurableBuffer(tmp_path / "buffer.db") as buffer,
            UnsPublisher(
                BROKER,
                buffer,
                line=scenario.line_path,
                epoch=scenario.plant.epoch.timestamp(),
                run_id="dash-r0",
                root=root,
            ) as publisher,
        ):
            await publisher.submit([r for r in records if isinstance(r, Sample)])
            await publisher.submit_events([r for r in records if isinstance(r, Event)])
            await asyncio.wait_for(publisher.flush(), 30)
            assert platform.ingest is not None
            async with asyncio.timeout(30):
                # the publisher's PUBACKs do not say the ingest has the messages yet: poll
                while "dash-r0" not in platform.ingest.runs:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            await asyncio.wait_for(platform.ingest.drain(), 30)
            platform.ingest.settle()  # all 12 h are in: nothing is held back for reordering

            dom = await _chromium(f"{platform.url}/", tmp_path / "profile", "--dump-dom")
            assert 'data-loaded="true"' in dom, dom[-3000:]
            assert "bonder-01" in dom
            assert re.search(r"OEE \d{1,3}\.\d %", dom), "no OEE value on the page"
            assert "dash-r0" in dom
            assert re.search(r'class="station st-[0-3]"', dom), "station state colour missing"

            ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
            ARTIFACT.unlink(missing_ok=True)
            await _chromium(
                f"{platform.url}/",
                tmp_path / "profile",
                f"--screenshot={ARTIFACT}",
                "--hide-scrollbars",
            )
            assert ARTIFACT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    asyncio.run(main())
