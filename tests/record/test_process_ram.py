"""Where the archives of a record are extracted: RAM when they fit, else node-local disk, and nothing left."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from helpers import zip_folder

import zenodo_hpc.record.extract as extract_module
import zenodo_hpc.record.process as process_module
from zenodo_hpc.core.config import Config, config_from_dict
from zenodo_hpc.core.state import RunDir
from zenodo_hpc.record.extract import RAM_FILESYSTEMS, Placement, filesystem_type
from zenodo_hpc.record.leftovers import OWNER_FILE, clean_leftovers, record_tmp
from zenodo_hpc.record.process import process_path, process_sources

pytestmark = pytest.mark.usefixtures("ram_root")  # every test gets its own RAM folder (tests/conftest.py)


# --- where archives are extracted: RAM when they fit, else node-local disk ------------------------------------


def spy_extractions(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Path, bool]]:
    """(folder, whether it had an owner file beside it) of every extraction process makes, in order."""
    seen: list[tuple[Path, bool]] = []
    original = process_module.extract_archive

    def spy(archive: Path, dest: Path, **kwargs: Any) -> Any:
        seen.append((Path(dest), (Path(dest).parent / OWNER_FILE).is_file()))
        return original(archive, dest, **kwargs)

    monkeypatch.setattr(process_module, "extract_archive", spy)
    return seen


def record_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def disk_only(tmp_path: Path, archive: Path, record_id: str) -> dict[str, bytes]:
    """The record as extraction on node-local disk alone makes it."""
    cfg = config_from_dict({"extract": {"memory_budget_mb": 0}})
    return record_bytes(process_path(archive, tmp_path / "disk-only", cfg, record_id=record_id).written.folder)


def test_an_archive_that_fits_is_extracted_in_ram_and_the_record_is_the_same(
        source_tree: Path, tmp_path: Path, tmpfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = zip_folder(source_tree, tmp_path / "r.zip")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    seen = spy_extractions(monkeypatch)
    result = process_path(archive, tmp_path / "data", Config(), record_id="20", tmp_dir=scratch)
    [(folder, owned)] = seen
    assert folder.parent.parent == tmpfs and folder.parent.name.startswith("zenodo-hpc-20-") and owned
    assert filesystem_type(folder) in RAM_FILESYSTEMS
    assert list(tmpfs.iterdir()) == [] and list(scratch.iterdir()) == []  # all removed
    # memory_budget_mb changes where, never what: the same bytes as extraction on disk
    assert record_bytes(result.written.folder) == disk_only(tmp_path, archive, "20")
    assert Config().sha256() == config_from_dict({"extract": {"memory_budget_mb": 0}}).sha256()


def test_an_archive_over_the_budget_or_with_ram_off_is_extracted_on_disk(
        tmp_path: Path, tmpfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big/a.txt", b"x = 1\n" * 400_000)  # 2.4 MB extracted: over a budget of 1 MiB
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    seen = spy_extractions(monkeypatch)
    for budget in (1, 0):
        process_path(archive, tmp_path / f"data-{budget}", config_from_dict({"extract": {"memory_budget_mb": budget}}),
                     record_id="21", tmp_dir=scratch)
    assert [folder.parent.parent for folder, _ in seen] == [scratch, scratch]
    process_path(archive, tmp_path / "data-3", config_from_dict({"extract": {"memory_budget_mb": 3}}),
                 record_id="21", tmp_dir=scratch)
    assert seen[-1][0].parent.parent == tmpfs
    assert list(tmpfs.iterdir()) == [] and list(scratch.iterdir()) == []


def test_the_budget_is_the_records_not_each_archives(tmp_path: Path, tmpfs: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    archives = []
    for name in ("one", "two"):
        archives.append(tmp_path / f"{name}.zip")
        with zipfile.ZipFile(archives[-1], "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(f"{name}/a.txt", f"{name} = 1\n".encode() * 100_000)  # ~0.8 MB each, of a 1 MiB budget
    seen = spy_extractions(monkeypatch)
    cfg = config_from_dict({"extract": {"memory_budget_mb": 1}})
    process_sources("22", [(a, a.stem + "/") for a in archives], tmp_path / "data", cfg, hit=None, source_info=None,
                    tmp_dir=tmp_path)
    assert [folder.parent.parent for folder, _ in seen] == [tmpfs, tmp_path]


def test_an_archive_taking_more_ram_than_expected_is_extracted_again_on_disk(
        source_tree: Path, tmp_path: Path, tmpfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = zip_folder(source_tree, tmp_path / "r.zip")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    seen = spy_extractions(monkeypatch)
    # the estimate let it in, but the archive takes more than the 64 KB it may take there
    monkeypatch.setattr(process_module, "choose_memory_root", lambda path, budget: Placement(tmpfs, 65536, "test"))
    result = process_path(archive, tmp_path / "data", Config(), record_id="23", tmp_dir=scratch)
    assert [folder.parent.parent for folder, _ in seen] == [tmpfs, scratch]
    assert list(tmpfs.iterdir()) == [] and list(scratch.iterdir()) == []
    monkeypatch.undo()
    assert record_bytes(result.written.folder) == disk_only(tmp_path, archive, "23")


def test_a_full_ram_folder_sends_the_archive_to_disk(source_tree: Path, tmp_path: Path, tmpfs: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    archive = zip_folder(source_tree, tmp_path / "r.zip")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    seen = spy_extractions(monkeypatch)
    real_write = os.write

    def write(fd: int, data: bytes) -> int:  # the tmpfs is full (another job filled it since we looked)
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(tmpfs)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(extract_module.os, "write", write)
    result = process_path(archive, tmp_path / "data", Config(), record_id="24", tmp_dir=scratch)
    monkeypatch.undo()
    assert [folder.parent.parent for folder, _ in seen] == [tmpfs, scratch]
    assert list(tmpfs.iterdir()) == [] and list(scratch.iterdir()) == []
    assert record_bytes(result.written.folder) == disk_only(tmp_path, archive, "24")


def test_a_ram_folder_that_cannot_even_be_made_sends_the_archive_to_disk(
        source_tree: Path, tmp_path: Path, tmpfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = zip_folder(source_tree, tmp_path / "r.zip")
    seen = spy_extractions(monkeypatch)

    def full(record_id: str, root: Path) -> Any:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(root))

    monkeypatch.setattr(process_module, "record_tmp", full)
    process_path(archive, tmp_path / "data", Config(), record_id="27", tmp_dir=tmp_path)
    assert [folder.parent.parent for folder, _ in seen] == [tmp_path]
    assert list(tmpfs.iterdir()) == []


_KILLED_MID_RECORD = """
import sys, time
from pathlib import Path
import zenodo_hpc.record.process as process
from zenodo_hpc.core.config import Config

def stop(roots, raster):  # extracted, not yet walked: say so, and wait for the kill
    roots = list(roots)
    print(roots[0][0], flush=True)
    time.sleep(600)

process.rasterize_tree = stop
process.process_path(Path(sys.argv[1]), Path(sys.argv[2]), Config(), record_id="25")
"""


def test_a_killed_workers_ram_folder_is_removed_by_the_next_one_and_a_live_ones_kept(
        source_tree: Path, tmp_path: Path, tmpfs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = zip_folder(source_tree, tmp_path / "r.zip")
    env = {**os.environ, "TMPDIR": str(tmpfs)}  # its RAM-backed folder (and its only temporary space)
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_MID_RECORD, str(archive), str(tmp_path / "data")],
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    extracted = Path(proc.stdout.readline().strip())
    assert extracted.parent.parent == tmpfs and (extracted / source_tree.name).is_dir()
    proc.send_signal(signal.SIGKILL)  # as the OOM killer does: nothing of it runs again
    proc.wait()
    proc.stdout.close()
    assert extracted.exists()  # left behind, holding memory
    disk = tmp_path / "node-tmp"
    disk.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpfs))
    with record_tmp("26", tmpfs) as live:  # this process's own, in use
        clean_leftovers(RunDir(tmp_path / "run"), disk)
        assert not extracted.parent.exists() and live.exists()
    assert list(tmpfs.iterdir()) == []
