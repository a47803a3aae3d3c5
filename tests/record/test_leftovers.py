"""Node-local folders of stopped workers (zenodo_hpc/record/leftovers.py): each one is removed once nobody can use it.

A killed worker's folder is removed by the next worker (tests/record/test_process_ram.py). Here: the folders a worker
stopped at the wrong instant leaves without an owner file to say whose they are.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from zenodo_hpc.record import leftovers
from zenodo_hpc.record.leftovers import OWNER_FILE, clean_dead_tmp, record_tmp


def _aged(path: Path, seconds: float) -> Path:
    moment = time.time() - seconds
    os.utime(path, (moment, moment))
    return path


def test_an_empty_folder_without_owner_file_is_removed_once_a_minute_old(tmp_path: Path) -> None:
    """Ctrl-C between making the folder and naming its owner in it (or between removing the owner file and the
    folder) left an empty ``zenodo-hpc-<id>-*`` that no clean-up ever removed."""
    stopped = tmp_path / "zenodo-hpc-7000001-abc123"
    stopped.mkdir()
    _aged(stopped, 120)
    being_made = tmp_path / "zenodo-hpc-7000002-def456"  # a worker is about to write its owner file
    being_made.mkdir()
    older_version = tmp_path / "zenodo-hpc-7000003-ghi789"  # no owner file, but something in it
    (older_version / "download").mkdir(parents=True)
    _aged(older_version, 120)
    other = tmp_path / "not-ours"
    other.mkdir()
    _aged(other, 120)
    assert clean_dead_tmp(tmp_path) == [str(stopped)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-ours", being_made.name, older_version.name]


def test_a_worker_cleaning_up_removes_its_owner_file_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker stopped while it removes its folder (Ctrl-C, then the driver's SIGTERM) must leave a folder that
    still names it, so that the next worker removes it once it is gone: the owner file goes after everything."""
    removed: list[str] = []
    unlink = os.unlink

    def spy(path: str | os.PathLike[str], *args: object, **kwargs: object) -> None:
        removed.append(os.path.basename(os.fspath(path)))
        unlink(path, *args, **kwargs)

    with record_tmp("7000001", tmp_path) as folder:
        for i in range(20):
            (folder / f"part-{i:02d}.bin").write_bytes(b"x")
        (folder / "download").mkdir()
        (folder / "download" / "a.zip").write_bytes(b"zip")
        monkeypatch.setattr(leftovers.os, "unlink", spy)
    monkeypatch.undo()
    assert not folder.exists() and removed[-1] == OWNER_FILE and len(removed) == 22
