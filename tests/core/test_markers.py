"""core/markers.py: the done and failure markers read and write the same files as before they had types."""

from __future__ import annotations

import json
from pathlib import Path

from zenodo_hpc.core.markers import UNREADABLE_MARKER, DoneMarker, FailureMarker
from zenodo_hpc.core.state import (
    DONE,
    FAILED,
    RunDir,
    atomic_write_json,
    mark_done,
    mark_failed,
    read_done,
    read_failure,
)

# A done marker and a failure marker as the worker wrote them before the markers had types (keys sorted).
DONE_BEFORE = {"attempts": 1, "bytes_written": 2048, "files": 3, "finished": "2026-12-01T10:00:00+0000", "id": "101",
               "outputs": {"images_101.h5": {"sha256": "ab" * 32, "size": 2048}}, "seconds": 1.25, "segments": 7,
               "source": "archive", "task": "g0001-s00000 (job 12_0)"}
FAILED_BEFORE = {"attempts": 2, "history": [{"at": "2026-12-01T10:00:00+0000", "attempt": 2, "message": "boom",
                                             "reason": "http_500", "task": "g0002-s00001"}],
                 "id": "104", "message": "boom", "quarantined": False, "reason": "http_500",
                 "retry_at": "2026-12-01T11:00:00Z"}


def _file(run: RunDir, kind: str, record_id: str, data: object) -> Path:
    path = run.marker(kind, record_id)
    atomic_write_json(path, data)
    return path


def test_a_done_marker_of_before_reads_typed_and_writes_back_the_same_bytes(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    path = _file(run, DONE, "101", DONE_BEFORE)
    done = read_done(run, "101")
    assert done is not None and done.finished == DONE_BEFORE["finished"] and done.seconds == 1.25
    assert done.outputs == DONE_BEFORE["outputs"] and done.extra == {"files": 3, "segments": 7, "source": "archive"}
    before = path.read_bytes()
    atomic_write_json(path, done.to_json())
    assert path.read_bytes() == before


def test_a_done_marker_holding_what_this_version_does_not_expect_is_kept_as_it_was(tmp_path: Path) -> None:
    odd = {"id": 101, "finished": None, "seconds": "slow", "outputs": [], "later_key": {"x": 1}}
    done = DoneMarker.from_json(odd, "101")
    assert (done.id, done.finished, done.seconds, done.outputs) == ("101", None, None, None)  # read as missing
    assert done.to_json() == odd


def test_mark_done_writes_the_marker_it_wrote_before(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    folder = run.record_folder("101")
    folder.mkdir(parents=True)
    (folder / "images_101.h5").write_bytes(b"x" * 10)
    mark_done(run, "101", {"attempts": 1, "task": "t", "seconds": 0.5, "segments": 2})
    written = json.loads(run.marker(DONE, "101").read_text())
    assert set(written) == {"id", "finished", "attempts", "task", "seconds", "segments", "outputs"}
    assert written["outputs"]["images_101.h5"]["size"] == 10 and written["segments"] == 2


def test_a_failure_marker_of_before_reads_typed(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    _file(run, FAILED, "104", FAILED_BEFORE)
    failure = read_failure(run, "104")
    assert failure is not None and failure.to_json() == FAILED_BEFORE
    assert (failure.reason, failure.attempts, failure.quarantined) == ("http_500", 2, False)
    assert failure.failure_at(-1)["task"] == "g0002-s00001" and failure.failure_at(5) == {}


def test_mark_failed_writes_the_keys_it_wrote_before_and_keeps_the_history(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    mark_failed(run, "104", reason="http_500", message="boom", attempt=1, task="a", quarantined=False)
    failure = mark_failed(run, "104", reason="rate_limited", message="later", attempt=1, task="b", quarantined=False,
                          retry_at="2026-12-01T11:00:00Z")
    written = json.loads(run.marker(FAILED, "104").read_text())
    assert written == failure.to_json()
    assert set(written) == {"id", "reason", "message", "attempts", "quarantined", "history", "retry_at"}
    assert [h["reason"] for h in written["history"]] == ["http_500", "rate_limited"]
    mark_failed(run, "105", reason="http_404", message="gone", attempt=1, task="a", quarantined=True)
    assert "retry_at" not in json.loads(run.marker(FAILED, "105").read_text())


def test_an_unreadable_failure_marker_is_a_failure_of_its_own_not_quarantined(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    path = run.marker(FAILED, "104")
    path.parent.mkdir(parents=True)
    path.write_text('{"quarantined": tr')
    failure = read_failure(run, "104")
    assert failure is not None and failure.reason == UNREADABLE_MARKER and not failure.quarantined
    assert str(path) in (failure.message or "")
    assert FailureMarker.unreadable("104", "why").id == "104"
