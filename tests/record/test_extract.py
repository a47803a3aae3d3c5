"""Safe extraction (record/extract.py), the core: names, every format, modes, duplicates, small files kept."""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path

import pytest
from helpers import (
    BIG,
    extract,
    mode_of,
    refused,
    reg,
    save,
    tar_bytes,
    tdir,
    tlink,
    tspecial,
    zfile,
    zip_bytes,
    zsym,
)

from zenodo_hpc.record import extract as extract_module
from zenodo_hpc.record.extract import (
    ARCHIVE_SUFFIXES,
    ExtractStats,
    archive_kind,
    extract_archive,
    is_archive_name,
)

# --- names and kinds --------------------------------------------------------------------------------------------


def test_archive_suffixes_are_the_documented_ones() -> None:
    assert ARCHIVE_SUFFIXES == (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


@pytest.mark.parametrize(
    "name", ["Code.ZIP", "x.Tar.Gz", "a.TGZ", "b.tar.BZ2", "c.TBZ2", "d.TaR.xZ", "e.Txz", "repo-v1.0.tar"]
)
def test_is_archive_name_accepts_archive_suffixes_in_any_case(name: str) -> None:
    assert is_archive_name(name)


@pytest.mark.parametrize("name", ["notes.txt", "data.gz", "x.bz2", "zip", "a.tar.gz.md5", "archive.zipx", ""])
def test_is_archive_name_rejects_other_names(name: str) -> None:
    assert not is_archive_name(name)


def test_kind_comes_from_content_not_name(dest: Path) -> None:
    tgz = save(dest, "download.zip", tar_bytes([reg("proj/a.txt", b"tar inside")], "gz"))
    zipped = save(dest, "code.tar.gz", zip_bytes([("proj/a.txt", b"zip inside")]))
    assert archive_kind(tgz) == "tar"
    assert archive_kind(zipped) == "zip"
    extract(tgz, dest)
    assert (dest / "proj/a.txt").read_bytes() == b"tar inside"


def test_prefixed_zip_is_still_a_zip(dest: Path) -> None:
    path = save(dest, "sfx.bin", b"#!/bin/sh\nexit 0\n" + zip_bytes([("proj/a.txt", b"hello")]))
    assert archive_kind(path) == "zip"
    extract(path, dest)
    assert (dest / "proj/a.txt").read_bytes() == b"hello"


# --- every format extracts ------------------------------------------------------------------------------------

README = b"# demo\n"
MAIN = b"print('hi')\n" * 1000


def _tree_tar(compression: str) -> bytes:
    return tar_bytes(
        [
            tdir("proj-5d4087c/"),
            reg("proj-5d4087c/README.md", README),
            tdir("proj-5d4087c/src"),
            reg("proj-5d4087c/src/main.py", MAIN, 0o755),
            tdir("proj-5d4087c/empty/"),
        ],
        compression,
    )


def _tree_zip() -> bytes:
    return zip_bytes(
        [
            (zfile("proj-5d4087c/", stat.S_IFDIR | 0o755), b""),
            (zfile("proj-5d4087c/README.md", stat.S_IFREG | 0o644), README),
            (zfile("proj-5d4087c/src/main.py", stat.S_IFREG | 0o755), MAIN),
            (zfile("proj-5d4087c/empty/", stat.S_IFDIR | 0o755), b""),
        ]
    )


@pytest.mark.parametrize(
    ("filename", "build"),
    [
        ("code.zip", _tree_zip),
        ("code.tar", lambda: _tree_tar("")),
        ("code.tar.gz", lambda: _tree_tar("gz")),
        ("code.tgz", lambda: _tree_tar("gz")),
        ("code.tar.bz2", lambda: _tree_tar("bz2")),
        ("code.tar.xz", lambda: _tree_tar("xz")),
    ],
)
def test_each_format_extracts_content_modes_and_top_folder(dest: Path, filename: str, build) -> None:
    path = save(dest, filename, build())
    stats = extract(path, dest)
    assert os.listdir(dest) == ["proj-5d4087c"]
    top = dest / "proj-5d4087c"
    assert (top / "README.md").read_bytes() == README
    assert (top / "src/main.py").read_bytes() == MAIN
    assert (top / "empty").is_dir() and not any((top / "empty").iterdir())
    assert mode_of(top / "src/main.py") == 0o755
    assert mode_of(top / "README.md") == 0o644
    assert mode_of(top / "src") == 0o755
    assert stats == ExtractStats(
        members=4 if filename.endswith("zip") else 5,
        files=2,
        dirs=3,
        symlinks=0,
        bytes=len(README) + len(MAIN),
        skipped_special=0,
    )


def test_implicit_parents_and_dot_names_are_normalised(dest: Path) -> None:
    path = save(dest, "dots.tar", tar_bytes([tdir("."), tdir("./"), reg("./proj//deep/./x.txt", b"x")]))
    stats = extract(path, dest)
    assert (dest / "proj/deep/x.txt").read_bytes() == b"x"
    assert stats.files == 1 and stats.dirs == 2 and stats.members == 3


def test_zip_backslash_separators_become_folders(dest: Path) -> None:
    path = save(dest, "win.zip", zip_bytes([("proj\\src\\a.py", b"a = 1\n")]))
    extract(path, dest)
    assert (dest / "proj/src/a.py").read_bytes() == b"a = 1\n"


@pytest.mark.parametrize(("kind", "data"), [("tar", tar_bytes([])), ("zip", zip_bytes([]))], ids=["tar", "zip"])
def test_empty_archive_is_fine_and_extracts_nothing(dest: Path, kind: str, data: bytes) -> None:
    path = save(dest, f"empty.{kind}", data)
    assert archive_kind(path) == kind
    assert extract(path, dest) == ExtractStats(0, 0, 0, 0, 0, 0)
    assert os.listdir(dest) == []


def test_dest_must_be_an_existing_empty_folder(dest: Path) -> None:
    path = save(dest, "a.tar", tar_bytes([reg("a", b"a")]))
    (dest / "already").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        extract(path, dest)
    with pytest.raises(ValueError, match="not an existing directory"):
        extract(path, dest.parent / "missing")


# --- special files and modes -----------------------------------------------------------------------------------


def test_fifos_and_devices_are_skipped(dest: Path) -> None:
    entries = [
        tspecial("proj/fifo", tarfile.FIFOTYPE),
        tspecial("proj/null", tarfile.CHRTYPE),
        tspecial("proj/disk", tarfile.BLKTYPE),
        reg("proj/a.txt", b"a"),
    ]
    stats = extract(save(dest, "dev.tar", tar_bytes(entries)), dest)
    assert sorted(os.listdir(dest / "proj")) == ["a.txt"]
    assert stats.skipped_special == 3 and stats.files == 1 and stats.members == 4


def test_zip_fifo_entry_is_skipped(dest: Path) -> None:
    path = save(dest, "dev.zip", zip_bytes([(zfile("proj/fifo", stat.S_IFIFO | 0o644), b""), ("proj/a", b"a")]))
    stats = extract(path, dest)
    assert sorted(os.listdir(dest / "proj")) == ["a"] and stats.skipped_special == 1


@pytest.mark.parametrize(
    ("archive_mode", "expected"),
    [(0o4755, 0o755), (0o2644, 0o644), (0o6711, 0o755), (0o600, 0o644), (0o700, 0o755), (0o1777, 0o755)],
)
def test_tar_file_modes_are_sanitised(dest: Path, archive_mode: int, expected: int) -> None:
    extract(save(dest, "m.tar", tar_bytes([reg("proj/f", b"f", archive_mode)])), dest)
    assert mode_of(dest / "proj/f") == expected


def test_tar_directory_modes_are_sanitised(dest: Path) -> None:
    entries = [tdir("proj", 0o1777), tdir("proj/locked", 0o500), reg("proj/locked/f", b"f")]
    extract(save(dest, "m.tar", tar_bytes(entries)), dest)
    assert mode_of(dest / "proj") == 0o755
    assert mode_of(dest / "proj/locked") == 0o755
    assert (dest / "proj/locked/f").read_bytes() == b"f"


def test_zip_setuid_bit_is_stripped(dest: Path) -> None:
    path = save(dest, "m.zip", zip_bytes([(zfile("proj/suid", stat.S_IFREG | 0o6755), b"#!")]))
    extract(path, dest)
    assert mode_of(dest / "proj/suid") == 0o755


# --- duplicates and conflicts ---------------------------------------------------------------------------------


def test_duplicate_file_later_wins(dest: Path) -> None:
    path = save(dest, "dup.tar", tar_bytes([reg("proj/a", b"first"), reg("proj/a", b"second")]))
    stats = extract(path, dest)
    assert (dest / "proj/a").read_bytes() == b"second"
    assert stats.files == 1


def test_file_replacing_a_symlink_does_not_write_through_it(dest: Path) -> None:
    entries = [reg("proj/target.txt", b"keep me"), tlink("proj/a", "target.txt"), reg("proj/a", b"new")]
    stats = extract(save(dest, "dup.tar", tar_bytes(entries)), dest)
    assert not (dest / "proj/a").is_symlink()
    assert (dest / "proj/a").read_bytes() == b"new"
    assert (dest / "proj/target.txt").read_bytes() == b"keep me"
    assert stats.symlinks == 0 and stats.files == 2


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("c.tar", tar_bytes([reg("proj/a/x", b"x"), reg("proj/a", b"file")]),
         "bad entry 'proj/a' in c.tar: 'proj/a' is already a folder"),
        ("c.tar", tar_bytes([reg("proj/a", b"file"), tdir("proj/a")]),
         "bad entry 'proj/a' in c.tar: 'proj/a' is already a file"),
        ("c.zip", zip_bytes([("proj/a", b"file"), ("proj/a/b", b"x")]),
         "bad entry 'proj/a/b' in c.zip: 'proj/a' is already a file, not a folder"),
    ],
    ids=["file-where-a-folder-is", "folder-where-a-file-is", "entry-below-a-file"],
)
def test_an_entry_that_conflicts_with_an_earlier_one_is_bad(dest: Path, name: str, data: bytes, message: str) -> None:
    assert refused(save(dest, name, data), dest, "bad_archive") == message


# --- the small files' bytes, kept as extracted ------------------------------------------------------------------


def small_files_on_disk(dest: Path, limit: int) -> dict[str, bytes]:
    return {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*")
            if p.is_file() and not p.is_symlink() and p.stat().st_size <= limit}


@pytest.mark.filterwarnings("ignore:Duplicate name")  # zipfile, building the duplicates on purpose
@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_kept_contents_are_the_small_files_on_disk_after_every_replacement(dest: Path, kind: str) -> None:
    """What the walk is handed instead of reading must be what is on disk: later duplicates, a file turned
    symlink, hard-link copies and empty files included, and nothing of a file over the limit."""
    if kind == "tar":
        archive = save(dest, "a.tar.gz", tar_bytes([
            reg("p/a.txt", b"first"), reg("p/big.txt", b"x" * 200), reg("p/b.txt", b"becomes a link"),
            reg("p/a.txt", b"second, later wins"), tlink("p/b.txt", "a.txt"), reg("p/empty"),
            tlink("p/copy.txt", "p/a.txt", hard=True), reg("p/d/c.py", b"print(1)\n")], "gz"))
    else:
        archive = save(dest, "a.zip", zip_bytes([
            ("p/a.txt", b"first"), ("p/big.txt", b"x" * 200), ("p/b.txt", b"becomes a link"),
            ("p/a.txt", b"second, later wins"), zsym("p/b.txt", "a.txt"), ("p/empty", b""),
            ("p\\d\\c.py", b"print(1)\n")]))
    stats = extract_archive(archive, dest, max_bytes=BIG, max_members=100, keep_files_up_to=100)
    assert stats.contents == small_files_on_disk(dest, 100)
    assert stats.contents["p/a.txt"] == b"second, later wins" and "p/b.txt" not in stats.contents
    assert "p/big.txt" not in stats.contents and stats.contents["p/empty"] == b""
    assert extract_archive(archive, dest.parent / "outside", max_bytes=BIG, max_members=100).contents == {}


def test_kept_contents_stop_at_their_budget(dest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extract_module, "KEPT_BYTES", 25)
    archive = save(dest, "a.tar", tar_bytes([reg(f"p/{i}.txt", b"0123456789") for i in range(5)]))
    stats = extract_archive(archive, dest, max_bytes=BIG, max_members=100, keep_files_up_to=100)
    assert stats.contents == {"p/0.txt": b"0123456789", "p/1.txt": b"0123456789"} and stats.files == 5
