"""`zenodo-hpc demo`: the whole pipeline offline on the built-in sample, to a verified image."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from zenodo_hpc.cli import main
from zenodo_hpc.core.state import RunDir, ids_in, read_failure

pytestmark = pytest.mark.skipif(shutil.which("mksquashfs") is None,
                                reason="mksquashfs not on PATH (apt-get install squashfs-tools)")


def test_demo_runs_offline_to_a_verified_image(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--executor", "local"]) == 0
    text = capsys.readouterr().out
    run = RunDir(out / "run")
    image = run.root / "zenodo-ml.sqsh"
    assert image.exists() and (run.root / "zenodo-ml.sqsh.md5").exists()
    assert "verified" in text and "complete: every record is done or quarantined" in text
    assert f"zenodo-hpc status {run.root}" in text
    done = ids_in(run, "done")
    assert len(done) == 28
    assert read_failure(run, "7000031")["reason"] == "no_archive"  # the record with only a PDF
    from zenodo_hpc.dataset.load import load_metadata

    kinds = {load_metadata(run.data / i)["source"]["kind"] for i in done}
    assert kinds == {"zenodo", "github"}  # archives, and releases through the codeload fallback
    assert main(["demo", "--out", str(out), "--executor", "local"]) == 0  # again: picks up where it stands
    again = capsys.readouterr().out
    assert "+0 new" in again and "nothing to submit" in again and "verified" in again
