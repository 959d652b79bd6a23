"""Bad recordings beyond tests/recording/test_recording.py's (text, truncated, newer, foreign
MCAP, missing): an empty file, a directory, a version that is no number, no answer key."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from iiotbed.cli import app
from iiotbed.recording import RecordingError, open_recording
from iiotbed.recording.format import META_ANSWER_KEY, META_IIOTBED
from iiotbed.recording.writer import RecordingWriter

runner = CliRunner()


def _written(path: Path, version: str, key: bool) -> None:
    w = RecordingWriter(path, epoch_s=0.0)
    w.metadata(META_IIOTBED, {"schema_version": version, "software_version": "0.1.0"})
    if key:
        w.metadata(META_ANSWER_KEY, {"window": "[0, 1]", "line": "{}"})
    w.close()


@pytest.mark.parametrize("case", ["empty", "directory", "version-not-a-number", "no-answer-key"])
def test_more_bad_recordings_exit_2_with_a_message(tmp_path: Path, case: str) -> None:
    path = tmp_path / f"{case}.mcap"
    if case == "empty":
        path.write_bytes(b"")
        expected = "is not an MCAP recording"
    elif case == "directory":
        path.mkdir()
        expected = "is a directory, not a recording"
    elif case == "version-not-a-number":
        _written(path, "one", key=True)
        expected = "has no valid schema_version"
    else:
        _written(path, "1", key=False)
        expected = "has no valid answer key"
    for args in (["recording", "info", str(path)],
                 ["replay", str(path), "--broker", "mqtt://127.0.0.1:1", "--max"]):  # fmt: skip
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert expected in res.stderr and str(path) in res.stderr and "Traceback" not in res.output
    with pytest.raises(RecordingError, match=expected):
        open_recording(path)
