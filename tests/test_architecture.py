"""The architecture, checked: each import-linter contract in pyproject.toml is one test (run
through `lint-imports`, failing with its report), and the rules import-linter cannot express
(module size) are plain Python. docs/architecture.md explains the layers and the rules."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "iiotbed"
MAX_LINES = 600
GENERATED = ("protocols/sparkplug/_sparkplug_b_pb2",)  # protoc output, regenerated, not edited


def _contract_ids() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return [c["id"] for c in config["tool"]["importlinter"]["contracts"]]


def _lint_imports(contract: str) -> None:
    """Run `lint-imports` on one contract; fail with its report (the offending imports)."""
    assert contract in _contract_ids(), f"no contract {contract!r} in pyproject.toml"
    res = subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command; lint_imports_command()",
            "--no-logo",
            "--no-cache",  # no cache folder in the work tree; the graph builds in well under 1 s
            "--contract",
            contract,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = (res.stdout + res.stderr).strip()
    if res.returncode != 0 or "1 kept, 0 broken" not in report:
        pytest.fail(f"import contract {contract!r} is not kept:\n{report}", pytrace=False)


def test_protocols_import_no_devices_gateway_platform_or_testbed() -> None:
    _lint_imports("protocols-are-wire-formats")


def test_devices_and_gateway_never_import_each_other() -> None:
    _lint_imports("devices-gateway-independent")


def test_platform_imports_no_devices_gateway_or_testbed() -> None:
    _lint_imports("platform-sees-telemetry-only")


def test_simulator_imports_no_io_library() -> None:
    _lint_imports("sim-is-pure")


def test_only_mqtt_module_imports_paho() -> None:
    _lint_imports("paho-only-in-mqtt")


def test_only_opcua_adapters_import_asyncua() -> None:
    _lint_imports("asyncua-only-in-opcua-adapters")


def test_recording_testing_and_labs_sit_on_top() -> None:
    _lint_imports("composition-on-top")


def test_every_contract_has_its_test() -> None:
    source = Path(__file__).read_text(encoding="utf-8")
    untested = [c for c in _contract_ids() if f'_lint_imports("{c}")' not in source]
    assert not untested, f"contracts in pyproject.toml with no test here: {untested}"


def test_no_module_over_600_lines() -> None:
    too_long: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith(GENERATED):
            continue
        with path.open(encoding="utf-8") as f:
            lines = sum(1 for _ in f)
        if lines > MAX_LINES:
            too_long.append(f"src/iiotbed/{rel}: {lines} lines")
    if too_long:
        pytest.fail(
            f"modules over {MAX_LINES} lines (split them by concept, STYLE.md rule 1):\n"
            + "\n".join(too_long),
            pytrace=False,
        )


@pytest.mark.parametrize("rel", GENERATED)
def test_generated_code_exemption_still_names_a_file(rel: str) -> None:
    # a stale exemption would silently exempt whatever later takes the name
    assert list((SRC / rel).parent.glob(Path(rel).name + "*.py")), f"no src/iiotbed/{rel}*.py"
