"""Safe extraction: every archive here is built from real bytes with zipfile/tarfile, tricky ones by hand."""

from __future__ import annotations

import gzip
import io
import os
import random
import stat
import struct
import tarfile
import zipfile
from pathlib import Path

import pytest

from zenodo_hpc.core.errors import ExtractError
from zenodo_hpc.record import extract as extract_module
from zenodo_hpc.record.extract import (
    ARCHIVE_SUFFIXES,
    COMPRESSED_TAR_FACTOR,
    ENTRY_OVERHEAD,
    MAX_DEPTH,
    MAX_LISTED_SKIPS,
    MAX_SKIP_KEY_CHARS,
    PAGE_SIZE,
    RAM_FILESYSTEMS,
    SHARED_FILESYSTEMS,
    TAR_PAGE_FACTOR,
    ExtractStats,
    OverFootprint,
    archive_kind,
    choose_memory_root,
    expected_footprint,
    extract_archive,
    filesystem_type,
    free_bytes,
    is_archive_name,
    memory_left,
    memory_roots,
    name_problem,
    printable_name,
)

MB = 1 << 20
BIG = 10**9  # limits that never trigger unless a test wants them to

# --- building archives --------------------------------------------------------------------------------------

TarEntry = tuple[tarfile.TarInfo, bytes]


def reg(name: str, data: bytes = b"", mode: int = 0o644) -> TarEntry:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def tdir(name: str, mode: int = 0o755) -> TarEntry:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    return info, b""


def tlink(name: str, target: str, *, hard: bool = False) -> TarEntry:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info, b""


def tspecial(name: str, kind: bytes) -> TarEntry:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = kind, 1, 3
    return info, b""


def tar_bytes(entries: list[TarEntry], compression: str = "", tar_format: int = tarfile.PAX_FORMAT) -> bytes:
    """A tar of ``entries``; names holding surrogate escapes are written as their raw (non-UTF-8) bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=f"w:{compression}", format=tar_format, encoding="utf-8",
                      errors="surrogateescape") as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def zfile(name: str, mode: int | None = None) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    if mode is not None:
        info.create_system = 3
        info.external_attr = mode << 16
    return info


def zsym(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    return zfile(name, stat.S_IFLNK | 0o777), target.encode()


def zip_bytes(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return buf.getvalue()


# --- fixtures and checks --------------------------------------------------------------------------------------


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    (tmp_path / "outside").mkdir()  # a sibling that must stay empty whatever the archive says
    (tmp_path / "archives").mkdir()
    folder = tmp_path / "dest"
    folder.mkdir()
    return folder


def save(dest: Path, name: str, data: bytes) -> Path:
    path = dest.parent / "archives" / name
    path.write_bytes(data)
    return path


def extract(path: Path, dest: Path, *, max_bytes: int = BIG, max_members: int = 100_000) -> ExtractStats:
    return extract_archive(path, dest, max_bytes=max_bytes, max_members=max_members)


def refused(path: Path, dest: Path, reason: str, **limits: int) -> str:
    """Extract expecting an ExtractError with ``reason``; return its (one-line) message."""
    with pytest.raises(ExtractError) as caught:
        extract(path, dest, **limits)
    message = str(caught.value)
    assert caught.value.reason == reason, message
    assert "\n" not in message
    return message


def assert_nothing_outside(dest: Path) -> None:
    root = dest.parent
    assert sorted(os.listdir(root)) == ["archives", "dest", "outside"]
    assert os.listdir(root / "outside") == []


def disk_bytes(root: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            info = os.lstat(os.path.join(folder, name))
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
    return total


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


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


def test_empty_tar_is_fine_and_extracts_nothing(dest: Path) -> None:
    path = save(dest, "empty.tar", tar_bytes([]))
    assert archive_kind(path) == "tar"
    assert extract(path, dest) == ExtractStats(0, 0, 0, 0, 0, 0)
    assert os.listdir(dest) == []


def test_empty_zip_is_fine_and_extracts_nothing(dest: Path) -> None:
    path = save(dest, "empty.zip", zip_bytes([]))
    assert extract(path, dest).files == 0
    assert os.listdir(dest) == []


def test_dest_must_be_an_existing_empty_folder(dest: Path) -> None:
    path = save(dest, "a.tar", tar_bytes([reg("a", b"a")]))
    (dest / "already").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        extract(path, dest)
    with pytest.raises(ValueError, match="not an existing directory"):
        extract(path, dest.parent / "missing")


# --- unsafe names ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../outside/pwned", "proj/../../outside/pwned", "proj/../inside-but-dotdot"])
def test_tar_dotdot_entry_is_refused(dest: Path, name: str) -> None:
    path = save(dest, "evil.tar", tar_bytes([reg("proj/ok.txt", b"ok"), reg(name, b"pwned")]))
    message = refused(path, dest, "unsafe_archive")
    assert message == f"unsafe entry '{name}' in evil.tar: path escapes the extraction folder"
    assert_nothing_outside(dest)


def test_tar_absolute_entry_is_refused(dest: Path) -> None:
    name = str(dest.parent / "outside" / "pwned")
    path = save(dest, "evil.tar", tar_bytes([reg(name, b"pwned")]))
    message = refused(path, dest, "unsafe_archive")
    assert message == f"unsafe entry '{name}' in evil.tar: path is absolute"
    assert_nothing_outside(dest)


@pytest.mark.parametrize("name", ["/etc/pwned", "C:\\pwned.txt", "c:pwned.txt", "\\pwned.txt", "..\\pwned.txt"])
def test_zip_absolute_or_dotdot_entry_is_refused(dest: Path, name: str) -> None:
    path = save(dest, "evil.zip", zip_bytes([(name, b"pwned")]))
    message = refused(path, dest, "unsafe_archive")
    assert "evil.zip" in message and repr(name) in message
    assert_nothing_outside(dest)
    assert os.listdir(dest) == []


def test_unsafe_special_entry_name_is_refused_too(dest: Path) -> None:
    path = save(dest, "evil.tar", tar_bytes([tspecial("../outside/fifo", tarfile.FIFOTYPE)]))
    refused(path, dest, "unsafe_archive")
    assert_nothing_outside(dest)


# --- links ------------------------------------------------------------------------------------------------------


def test_tar_symlink_with_absolute_target_is_refused(dest: Path) -> None:
    path = save(dest, "evil.tar", tar_bytes([tlink("proj/etc", "/etc")]))
    message = refused(path, dest, "unsafe_archive")
    assert message == "unsafe entry 'proj/etc' in evil.tar: symlink target '/etc' is absolute"
    assert not (dest / "proj/etc").is_symlink()


def test_tar_symlink_with_relative_escaping_target_is_refused(dest: Path) -> None:
    path = save(dest, "evil.tar", tar_bytes([tlink("proj/out", "../../outside")]))
    message = refused(path, dest, "unsafe_archive")
    assert "symlink target '../../outside' points outside the extraction folder" in message
    assert not (dest / "proj/out").is_symlink()


@pytest.mark.parametrize("target", ["/tmp", "../../outside", "../.."])
def test_zip_symlink_to_outside_is_refused(dest: Path, target: str) -> None:
    path = save(dest, "evil.zip", zip_bytes([zsym("proj/out", target)]))
    refused(path, dest, "unsafe_archive")
    assert not (dest / "proj/out").is_symlink()


def test_symlink_then_write_through_it_is_refused(dest: Path) -> None:
    """The classic: ``link -> /somewhere`` then ``link/x`` would write to /somewhere/x."""
    outside = str(dest.parent / "outside")
    path = save(dest, "evil.tar", tar_bytes([tlink("link", outside), reg("link/pwned", b"pwned")]))
    refused(path, dest, "unsafe_archive")
    assert_nothing_outside(dest)


def test_write_through_an_inside_symlink_is_refused(dest: Path) -> None:
    entries = [tdir("proj/sub"), tlink("proj/link", "sub"), reg("proj/link/x", b"x")]
    path = save(dest, "evil.tar", tar_bytes(entries))
    message = refused(path, dest, "unsafe_archive")
    assert message == "unsafe entry 'proj/link/x' in evil.tar: path goes through symlink 'proj/link'"
    assert not (dest / "proj/sub/x").exists()


def test_symlink_chain_escaping_only_for_real_is_refused(dest: Path) -> None:
    """``proj/a -> ..`` is the root and ``proj/b -> a/..`` looks like ``proj``, but really is the parent."""
    entries = [tlink("proj/a", ".."), tlink("proj/b", "a/..")]
    path = save(dest, "chain.tar", tar_bytes(entries))
    message = refused(path, dest, "unsafe_archive")
    assert "'proj/b'" in message and "through other symlinks" in message


def test_symlink_chain_then_write_through_it_writes_nothing_outside(dest: Path) -> None:
    entries = [tlink("proj/a", ".."), tlink("proj/b", "a/.."), reg("proj/b/outside/pwned", b"pwned")]
    path = save(dest, "chain.tar", tar_bytes(entries))
    refused(path, dest, "unsafe_archive")
    assert_nothing_outside(dest)


def test_inside_symlinks_are_created_as_symlinks(dest: Path) -> None:
    tar = save(dest, "ok.tar", tar_bytes([reg("proj/src/main.py", b"x"), tlink("proj/latest", "src/main.py")]))
    stats = extract(tar, dest)
    link = dest / "proj/latest"
    assert link.is_symlink() and os.readlink(link) == "src/main.py"
    assert link.read_bytes() == b"x"
    assert stats.symlinks == 1 and stats.files == 1


def test_zip_inside_symlink_is_created_as_symlink(dest: Path) -> None:
    path = save(dest, "ok.zip", zip_bytes([("proj/docs/a.md", b"doc"), zsym("proj/up", "docs/../docs/a.md")]))
    stats = extract(path, dest)
    assert os.readlink(dest / "proj/up") == "docs/../docs/a.md"
    assert stats.symlinks == 1 and stats.bytes == 3


def test_dangling_inside_symlink_is_kept(dest: Path) -> None:
    path = save(dest, "ok.tar", tar_bytes([tlink("proj/missing", "not/there")]))
    extract(path, dest)
    assert os.readlink(dest / "proj/missing") == "not/there"


def test_tar_hard_link_to_outside_is_refused(dest: Path) -> None:
    path = save(dest, "evil.tar", tar_bytes([tlink("proj/passwd", "../outside/secret", hard=True)]))
    message = refused(path, dest, "unsafe_archive")
    assert "hard link target '../outside/secret' escapes the extraction folder" in message
    assert_nothing_outside(dest)


@pytest.mark.parametrize("target", ["/etc/passwd", "proj/never-extracted", "proj/link", "proj"])
def test_tar_hard_link_must_name_an_earlier_regular_file(dest: Path, target: str) -> None:
    entries = [reg("proj/later.txt", b"x"), tlink("proj/link", "later.txt"), tlink("proj/h", target, hard=True)]
    path = save(dest, "evil.tar", tar_bytes(entries))
    refused(path, dest, "unsafe_archive")
    assert not (dest / "proj/h").exists()


def test_tar_hard_link_is_materialised_as_a_copy(dest: Path) -> None:
    entries = [reg("proj/run.sh", b"echo hi\n", 0o755), tlink("proj/again.sh", "proj/run.sh", hard=True)]
    path = save(dest, "ok.tar", tar_bytes(entries))
    stats = extract(path, dest)
    original, copy = dest / "proj/run.sh", dest / "proj/again.sh"
    assert copy.read_bytes() == b"echo hi\n" and not copy.is_symlink()
    assert os.stat(original).st_ino != os.stat(copy).st_ino
    assert mode_of(copy) == 0o755
    assert stats.files == 2 and stats.bytes == 16


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


def test_file_where_a_folder_exists_is_bad(dest: Path) -> None:
    path = save(dest, "c.tar", tar_bytes([reg("proj/a/x", b"x"), reg("proj/a", b"file")]))
    message = refused(path, dest, "bad_archive")
    assert message == "bad entry 'proj/a' in c.tar: 'proj/a' is already a folder"


def test_folder_where_a_file_exists_is_bad(dest: Path) -> None:
    path = save(dest, "c.tar", tar_bytes([reg("proj/a", b"file"), tdir("proj/a")]))
    assert "'proj/a' is already a file" in refused(path, dest, "bad_archive")


def test_entry_below_a_file_is_bad(dest: Path) -> None:
    path = save(dest, "c.zip", zip_bytes([("proj/a", b"file"), ("proj/a/b", b"x")]))
    assert "'proj/a' is already a file, not a folder" in refused(path, dest, "bad_archive")


# --- size and member limits --------------------------------------------------------------------------------------


def test_zip_bomb_is_stopped(dest: Path) -> None:
    path = save(dest, "bomb.zip", zip_bytes([("x/big.bin", bytes(50 * MB))]))
    assert path.stat().st_size < MB  # it really is a bomb
    message = refused(path, dest, "too_large", max_bytes=MB)
    assert message == f"bomb.zip expands to more than {MB} bytes (extract.max_bytes); stopped at entry 'x/big.bin'"
    assert disk_bytes(dest) <= MB + MB


def _lie_about_size(data: bytes, size: int) -> bytes:
    """Rewrite the one entry's uncompressed size in both the local header and the central directory."""
    buf = bytearray(data)
    central = zipfile.ZipFile(io.BytesIO(data)).start_dir
    assert buf[:4] == b"PK\x03\x04" and buf[central : central + 4] == b"PK\x01\x02"
    struct.pack_into("<I", buf, 22, size)
    struct.pack_into("<I", buf, central + 24, size)
    return bytes(buf)


def test_zip_with_understated_size_is_still_capped(dest: Path) -> None:
    data = _lie_about_size(zip_bytes([("x/big.bin", bytes(50 * MB))]), 1000)
    path = save(dest, "liar.zip", data)
    assert zipfile.ZipFile(path).getinfo("x/big.bin").file_size == 1000
    message = refused(path, dest, "bad_archive", max_bytes=MB)
    assert "CRC" in message
    assert disk_bytes(dest) <= 1000


def test_zip_with_overstated_size_is_refused_before_writing(dest: Path) -> None:
    data = _lie_about_size(zip_bytes([("x/small.bin", b"tiny")]), 2**31)
    path = save(dest, "liar.zip", data)
    refused(path, dest, "too_large", max_bytes=MB)
    assert os.listdir(dest) == []


class _EndlessZeros(io.RawIOBase):
    """A member stream far longer than its header says (64 MiB, so a missing cap fails instead of hanging)."""

    def __init__(self) -> None:
        self.left = 64 * MB

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        size = min(len(buffer), self.left)
        buffer[:size] = bytes(size)
        self.left -= size
        return size


def test_bytes_written_are_capped_even_when_the_reader_trusts_the_data(
    dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The running total, not the declared size, is the last line of defence."""
    path = save(dest, "liar.zip", zip_bytes([("x/small.bin", b"tiny")]))
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, *args, **kwargs: _EndlessZeros())
    refused(path, dest, "too_large", max_bytes=MB)
    assert 0 < disk_bytes(dest) <= MB


def test_tar_total_across_files_is_capped(dest: Path) -> None:
    chunk = bytes(400_000)
    entries = [reg(f"proj/{i}.bin", chunk) for i in range(5)]
    path = save(dest, "many.tar.gz", tar_bytes(entries, "gz"))
    message = refused(path, dest, "too_large", max_bytes=MB)
    assert message.endswith("stopped at entry 'proj/2.bin'")
    assert disk_bytes(dest) == 800_000


def test_tar_hard_link_copies_count_toward_the_cap(dest: Path) -> None:
    entries = [reg("proj/a.bin", bytes(600_000)), tlink("proj/b.bin", "proj/a.bin", hard=True)]
    message = refused(save(dest, "h.tar", tar_bytes(entries)), dest, "too_large", max_bytes=MB)
    assert "'proj/b.bin'" in message
    assert not (dest / "proj/b.bin").exists()


def test_tar_declared_size_is_checked_before_writing(dest: Path) -> None:
    """A header declaring a huge size (no data follows) is refused before a single byte is written."""
    info, _ = reg("proj/huge.bin")
    info.size = 10 * MB
    path = save(dest, "huge.tar", info.tobuf() + tar_bytes([]))
    refused(path, dest, "too_large", max_bytes=MB)
    assert os.listdir(dest) == []


def test_member_cap_tar(dest: Path) -> None:
    entries = [reg(f"proj/{i:02}.txt", b"x") for i in range(11)]
    path = save(dest, "many.tar", tar_bytes(entries))
    message = refused(path, dest, "too_large", max_members=10)
    assert message == "many.tar has more than 10 entries (extract.max_members); stopped at entry 'proj/10.txt'"
    assert len(os.listdir(dest / "proj")) == 10


def test_member_cap_zip_is_checked_before_writing(dest: Path) -> None:
    path = save(dest, "many.zip", zip_bytes([(f"proj/{i:02}.txt", b"x") for i in range(11)]))
    message = refused(path, dest, "too_large", max_members=10)
    assert message == "many.zip has 11 entries, more than 10 (extract.max_members)"
    assert os.listdir(dest) == []


def test_member_cap_is_inclusive(dest: Path) -> None:
    entries = [reg(f"proj/{i:02}.txt", b"x") for i in range(10)]
    assert extract(save(dest, "ten.tar", tar_bytes(entries)), dest, max_members=10).files == 10


def test_byte_cap_is_inclusive(dest: Path) -> None:
    path = save(dest, "exact.zip", zip_bytes([("a", bytes(1000)), ("b", bytes(24))]))
    assert extract(path, dest, max_bytes=1024).bytes == 1024


# --- corrupt and non-archives ----------------------------------------------------------------------------------


def _incompressible(size: int) -> bytes:
    return random.Random(7).randbytes(size)


def test_truncated_tar_gz_is_bad(dest: Path) -> None:
    data = tar_bytes([reg("proj/a.bin", _incompressible(200_000)), reg("proj/b.txt", b"b")], "gz")
    path = save(dest, "cut.tar.gz", data[: len(data) // 2])
    message = refused(path, dest, "bad_archive")
    assert message.startswith("cut.tar.gz is corrupt or truncated at entry 'proj/a.bin': ")


def test_tar_gz_with_bad_checksum_is_bad(dest: Path) -> None:
    data = bytearray(tar_bytes([reg("proj/a.txt", b"hello")], "gz"))
    data[-8] ^= 0xFF  # the gzip trailer's CRC32, only reached after the tar end marker
    assert "CRC" in refused(save(dest, "crc.tgz", bytes(data)), dest, "bad_archive")


def test_gzip_without_a_tar_inside_is_bad(dest: Path) -> None:
    path = save(dest, "notes.tar.gz", gzip.compress(b"just some text\n" * 100))
    message = refused(path, dest, "bad_archive")
    assert message == "notes.tar.gz is gzip-compressed but does not hold a tar archive"


def test_truncated_plain_tar_mid_data_is_bad(dest: Path) -> None:
    data = tar_bytes([reg("proj/a.bin", bytes(100_000))])
    path = save(dest, "cut.tar", data[:50_000])
    assert "unexpected end of data" in refused(path, dest, "bad_archive")


def test_plain_tar_cut_at_a_header_boundary_is_bad(dest: Path) -> None:
    """tarfile itself silently accepts this; the missing end-of-archive marker gives it away."""
    data = tar_bytes([reg("proj/a.txt", b"a" * 512), reg("proj/b.txt", b"b")])
    path = save(dest, "cut.tar", data[:1024])  # one header + one data block, nothing after
    assert "end-of-archive marker" in refused(path, dest, "bad_archive")


def test_tar_with_garbage_header_is_bad(dest: Path) -> None:
    data = bytearray(tar_bytes([reg("proj/a.txt", b"a"), reg("proj/b.txt", b"b")]))
    data[1024:1536] = b"\xab" * 512  # the second header
    message = refused(save(dest, "junk.tar", bytes(data)), dest, "bad_archive")
    assert message == "junk.tar is corrupt: invalid tar header at byte 1024"


def test_truncated_zip_is_bad(dest: Path) -> None:
    data = zip_bytes([("proj/a.bin", _incompressible(100_000)), ("proj/b.txt", b"b")])
    path = save(dest, "cut.zip", data[: len(data) // 2])
    assert archive_kind(path) == "zip"
    assert refused(path, dest, "bad_archive").startswith("cut.zip is corrupt or truncated")
    assert os.listdir(dest) == []


def test_zip_crc_error_is_bad(dest: Path) -> None:
    info = zfile("proj/a.txt")
    info.compress_type = zipfile.ZIP_STORED
    data = bytearray(zip_bytes([(info, b"hello world")]))
    at = data.index(b"hello world")
    data[at] ^= 0x01
    message = refused(save(dest, "crc.zip", bytes(data)), dest, "bad_archive")
    assert "'proj/a.txt'" in message and "CRC" in message


def test_encrypted_zip_entry_is_bad(dest: Path) -> None:
    data = bytearray(zip_bytes([("proj/secret.txt", b"s")]))
    central = zipfile.ZipFile(io.BytesIO(bytes(data))).start_dir
    data[6] |= 0x01  # general purpose flag bit 0, local header
    data[central + 8] |= 0x01  # and central directory
    message = refused(save(dest, "enc.zip", bytes(data)), dest, "bad_archive")
    assert "encrypted" in message and os.listdir(dest) == []


HTML = b"""<!DOCTYPE html>
<html lang="en"><head><title>Error 503</title></head>
<body><h1>Service unavailable</h1></body></html>
"""


def test_html_page_is_not_an_archive(dest: Path) -> None:
    path = save(dest, "record.zip", HTML)
    with pytest.raises(ExtractError, match="looks like an HTML page") as caught:
        archive_kind(path)
    assert caught.value.reason == "bad_archive"
    assert refused(path, dest, "bad_archive") == "record.zip looks like an HTML page, not an archive"


def test_random_bytes_are_not_an_archive(dest: Path) -> None:
    path = save(dest, "noise.tar.gz", _incompressible(4096))
    assert refused(path, dest, "bad_archive") == "noise.tar.gz is not a zip or tar archive (unrecognised content)"


def test_empty_file_is_not_an_archive(dest: Path) -> None:
    path = save(dest, "nothing.zip", b"")
    assert refused(path, dest, "bad_archive") == "nothing.zip is empty, not an archive"


def test_json_error_is_named(dest: Path) -> None:
    path = save(dest, "files.zip", b'{"status": 404, "message": "not found"}')
    assert "looks like a JSON document" in refused(path, dest, "bad_archive")


# --- odd names: that member is skipped and reported, the archive goes on ---------------------------------------


def zip_with_raw_names(entries: list[tuple[str, bytes]], raw: dict[str, bytes]) -> bytes:
    """A zip whose names are written UTF-8-flagged, then each ``raw`` placeholder swapped for its bytes.

    The swap keeps every length, so the local headers and the central directory stay consistent.
    """
    data = zip_bytes([(name, content) for name, content in entries])
    for placeholder, replacement in raw.items():
        assert len(placeholder.encode()) == len(replacement)
        data = data.replace(placeholder.encode(), replacement)
    return data


def nested(depth: int, leaf: str) -> str:
    """``proj/d/d/.../leaf`` with ``depth`` components in all."""
    return "/".join(["proj", *["d"] * (depth - 2), leaf])


@pytest.mark.parametrize("tar_format", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_tar_member_with_non_utf8_name_is_skipped_alone(dest: Path, tar_format: int) -> None:
    entries = [reg("proj/a.py", b"a"), reg("proj/caf\udce9.py", b"latin-1 name"), tdir("proj/d\udcff"),
               reg("proj/d\udcff/in.py", b"x"), reg("proj/z.py", b"z")]
    data = tar_bytes(entries, tar_format=tar_format)
    assert b"caf\xe9.py" in data  # really the raw byte, not its UTF-8 encoding
    stats = extract(save(dest, "latin.tar", data), dest)
    assert sorted(os.listdir(dest / "proj")) == ["a.py", "z.py"]
    assert stats.skipped == [("proj/caf\ufffd.py", "bad_name"), ("proj/d\ufffd/in.py", "bad_name")]
    assert stats.files == 2 and stats.dirs == 1 and stats.members == 5 and stats.skipped_unlisted == {}


def test_zip_utf8_flagged_name_that_is_not_utf8_is_skipped_alone(dest: Path) -> None:
    entries = [("proj/a.py", b"a"), ("proj/caf\u00e9.py", b"bad"), ("proj/d\u00e9/in.py", b"bad"), ("proj/z.py", b"z")]
    data = zip_with_raw_names(entries, {"caf\u00e9": b"caf\xff\xfe", "d\u00e9": b"d\xc3\x28"})
    with pytest.raises(UnicodeDecodeError):
        zipfile.ZipFile(io.BytesIO(data))  # what zipfile alone does with the whole archive
    stats = extract(save(dest, "bad-utf8.zip", data), dest)
    assert sorted(os.listdir(dest / "proj")) == ["a.py", "z.py"]
    assert (dest / "proj/z.py").read_bytes() == b"z"
    assert stats.skipped == [("proj/caf\ufffd\ufffd.py", "bad_name"), ("proj/d\ufffd(/in.py", "bad_name")]
    assert stats.files == 2 and stats.members == 4


def test_zip_name_without_utf8_flag_is_cp437_and_extracted(dest: Path) -> None:
    data = zip_with_raw_names([("proj/cafXX.py", b"ok")], {"cafXX": b"caf\x82\x82"})  # ASCII: no UTF-8 flag
    stats = extract(save(dest, "dos.zip", data), dest)
    assert os.listdir(dest / "proj") == ["caf\u00e9\u00e9.py"]  # 0x82 is é in cp437
    assert stats.skipped == [] and stats.files == 1


def test_1500_nested_folders_extract_to_the_depth_limit_and_report_the_file(dest: Path) -> None:
    deep = ["proj", *["d"] * 1500]
    entries = [tdir("/".join(deep[:i])) for i in range(1, len(deep) + 1)]
    entries += [reg("/".join([*deep, "bottom.py"]), b"deep"), reg("proj/beside.py", b"beside")]
    stats = extract(save(dest, "deep.tar", tar_bytes(entries)), dest)
    assert (dest / "proj/beside.py").read_bytes() == b"beside"
    assert stats.dirs == MAX_DEPTH and stats.files == 1
    deepest = dest.joinpath(*deep[:MAX_DEPTH])
    assert deepest.is_dir() and os.listdir(deepest) == []
    [(key, reason)] = stats.skipped
    assert reason == "too_deep" and len(key) == MAX_SKIP_KEY_CHARS
    assert key.startswith("proj/d/d/") and key.endswith("/d/d/bottom.py") and "…" in key


def test_depth_limit_is_inclusive(dest: Path) -> None:
    at_limit, over = nested(MAX_DEPTH, "at.py"), nested(MAX_DEPTH + 1, "over.py")
    stats = extract(save(dest, "limit.tar", tar_bytes([reg(at_limit, b"in"), reg(over, b"out")])), dest)
    assert (dest / at_limit).read_bytes() == b"in"
    assert not (dest / over).exists()
    assert stats.skipped == [(over, "too_deep")]


def test_component_over_255_bytes_is_skipped_and_255_is_kept(dest: Path) -> None:
    entries = [reg("proj/" + "a" * 300 + ".py", b"x"), reg("proj/" + "b" * 255, b"kept"),
               reg("proj/" + "é" * 128, b"256 bytes in UTF-8"), tdir("proj/" + "c" * 256), reg("proj/ok.py", b"ok")]
    stats = extract(save(dest, "long.tar", tar_bytes(entries)), dest)
    assert sorted(os.listdir(dest / "proj")) == ["b" * 255, "ok.py"]
    assert stats.skipped == [("proj/" + "a" * 300 + ".py", "name_too_long"), ("proj/" + "é" * 128, "name_too_long")]


def test_whole_path_over_the_limit_is_skipped(dest: Path) -> None:
    long_path = "/".join(["proj", *[c * 250 for c in "abcdefghijklm"]])  # 13 x 251 bytes + 4 > 3072
    stats = extract(save(dest, "path.tar", tar_bytes([reg(long_path, b"x"), reg("proj/ok.py", b"ok")])), dest)
    assert os.listdir(dest / "proj") == ["ok.py"]
    assert stats.skipped == [(long_path[:511] + "…" + long_path[-512:], "path_too_long")]


def test_skipped_members_are_listed_up_to_the_cap_and_counted_beyond(dest: Path) -> None:
    entries = [reg(f"proj/bad\udcff{i:04}.py", b"x") for i in range(MAX_LISTED_SKIPS + 5)]
    entries += [reg(nested(MAX_DEPTH + 1, "deep.py"), b"x"), reg("proj/ok.py", b"ok")]
    stats = extract(save(dest, "many.tar", tar_bytes(entries)), dest)
    assert len(stats.skipped) == MAX_LISTED_SKIPS
    assert stats.skipped[0] == ("proj/bad\ufffd0000.py", "bad_name")
    assert stats.skipped_unlisted == {"bad_name": 5, "too_deep": 1}
    assert os.listdir(dest / "proj") == ["ok.py"] and stats.members == MAX_LISTED_SKIPS + 7


def test_skipped_members_write_nothing_and_do_not_count_as_bytes(dest: Path) -> None:
    entries = [reg("proj/big\udcff.bin", bytes(2 * MB)), reg("proj/ok.py", b"ok")]
    stats = extract(save(dest, "big.tar", tar_bytes(entries)), dest, max_bytes=MB)
    assert stats.bytes == 2 and stats.skipped == [("proj/big\ufffd.bin", "bad_name")]


def test_skipped_members_still_count_toward_max_members(dest: Path) -> None:
    entries = [reg(f"proj/bad\udcff{i}", b"x") for i in range(11)]
    refused(save(dest, "many.tar", tar_bytes(entries)), dest, "too_large", max_members=10)


@pytest.mark.parametrize("name", ["../outside/caf\udce9", "/abs/caf\udce9", "proj/../../d/" * 60 + "x"])
def test_an_odd_name_that_also_escapes_is_still_unsafe(dest: Path, name: str) -> None:
    refused(save(dest, "evil.tar", tar_bytes([reg("proj/ok.py", b"ok"), reg(name, b"x")])), dest, "unsafe_archive")
    assert_nothing_outside(dest)


def test_odd_named_symlink_escaping_is_still_unsafe(dest: Path) -> None:
    path = save(dest, "evil.tar", tar_bytes([tlink("proj/l\udcff", "../../outside")]))
    refused(path, dest, "unsafe_archive")


def test_zip_odd_name_that_escapes_is_still_unsafe(dest: Path) -> None:
    data = zip_with_raw_names([("../outside/caf\u00e9", b"x")], {"caf\u00e9": b"caf\xff\xfe"})
    refused(save(dest, "evil.zip", data), dest, "unsafe_archive")
    assert_nothing_outside(dest)


def test_links_with_odd_names_or_to_skipped_files_are_skipped(dest: Path) -> None:
    entries = [reg("proj/caf\udce9.py", b"x"), tlink("proj/copy.py", "proj/caf\udce9.py", hard=True),
               tlink("proj/l\udcff", "copy.py"), reg("proj/ok.py", b"ok")]
    stats = extract(save(dest, "links.tar", tar_bytes(entries)), dest)
    assert os.listdir(dest / "proj") == ["ok.py"]
    assert stats.skipped == [("proj/caf\ufffd.py", "bad_name"), ("proj/copy.py", "bad_name"),
                             ("proj/l\ufffd", "bad_name")]


def test_name_checks_and_printable_keys() -> None:
    assert name_problem(["proj", "nul\x00"]) == "bad_name"
    assert name_problem(["proj", "\ud800"]) == "bad_name"  # a lone surrogate that is no escaped byte
    assert name_problem(["a" * 255] + ["b"] * (MAX_DEPTH - 1)) is None
    assert printable_name("a\udcff\x00b\ud800") == "a\ufffd\ufffdb\ufffd"
    assert printable_name("plain é") == "plain é"


# --- where to extract: a RAM-backed folder when the archive fits, else node-local disk -----------------------------

GiB = 1 << 30
FAKE_MOUNTS = "\n".join([
    "22 27 0:21 / /proc rw,relatime - proc proc rw",
    "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw",
    "25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=1024k",
    "40 27 0:50 / /scratch rw - lustre 10.0.0.1@tcp:/fs rw",
    "41 40 0:51 / /scratch/local\\040disk rw - xfs /dev/sdb rw",
    "42 24 0:52 / /dev/shm rw - ramfs ramfs rw",  # mounted over the tmpfs: it is what /dev/shm is now
    "43 27 0:53 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw",
    "44 27 0:54 / /cgv1/memory rw - cgroup cgroup rw,memory",
]) + "\n"


@pytest.fixture
def ram_dir() -> Path:
    """A folder of this machine's /dev/shm (a tmpfs), removed afterwards; skipped where there is none."""
    if not (Path("/dev/shm").is_dir() and filesystem_type("/dev/shm") in RAM_FILESYSTEMS):
        pytest.skip("no tmpfs at /dev/shm")
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="test-ram-", dir="/dev/shm"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def fake_proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, cgroup: str = "", meminfo: str = "") -> Path:
    """Point the mount table, /proc/self/cgroup and /proc/meminfo at files of ours; cgroup files go under the
    returned folder (mounted, for the table, at /sys/fs/cgroup and /cgv1/memory)."""
    root = tmp_path / "proc"
    root.mkdir()
    mounts = FAKE_MOUNTS.replace(" /sys/fs/cgroup ", f" {root}/v2 ").replace(" /cgv1/memory ", f" {root}/v1 ")
    for name, text in (("mountinfo", mounts), ("cgroup", cgroup), ("meminfo", meminfo)):
        (root / name).write_text(text)
    monkeypatch.setattr(extract_module, "_MOUNTINFO", str(root / "mountinfo"))
    monkeypatch.setattr(extract_module, "_CGROUP", str(root / "cgroup"))
    monkeypatch.setattr(extract_module, "_MEMINFO", str(root / "meminfo"))
    for name in ("SLURM_MEM_PER_NODE", "SLURM_MEM_PER_CPU", "SLURM_CPUS_PER_TASK"):
        monkeypatch.delenv(name, raising=False)
    return root


def write_files(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def test_file_system_types_come_from_the_deepest_and_latest_mount(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    fake_proc(tmp_path, monkeypatch)
    assert filesystem_type("/home/me") == "ext4"
    assert filesystem_type("/scratch/users/me") == "lustre" and "lustre" in SHARED_FILESYSTEMS
    assert filesystem_type("/scratch/local disk/x") == "xfs"  # \040 in the table is a space
    assert filesystem_type("/scratch/local") == "lustre"  # a prefix of a mount point is not inside it
    assert filesystem_type("/dev/shm/x") == "ramfs"  # the later mount over /dev/shm hides the first
    monkeypatch.setattr(extract_module, "_MOUNTINFO", str(tmp_path / "no-such-file"))
    assert filesystem_type("/dev/shm") is None


def test_memory_roots_are_the_job_tmpdirs_on_a_tmpfs_then_dev_shm(ram_dir: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    if filesystem_type(tmp_path) in RAM_FILESYSTEMS:
        pytest.skip("pytest's own temporary folder is on a tmpfs here")
    job_tmp = ram_dir / "job-1234"
    job_tmp.mkdir()
    monkeypatch.setenv("SLURM_TMPDIR", str(job_tmp))
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # node-local disk: not RAM
    assert memory_roots() == [job_tmp, Path("/dev/shm")]
    monkeypatch.setenv("SLURM_TMPDIR", str(ram_dir / "gone"))  # set, but missing
    monkeypatch.setenv("TMPDIR", "/dev/shm")  # the same folder as /dev/shm: listed once
    assert memory_roots() == [Path("/dev/shm")]
    monkeypatch.setattr(extract_module, "SHM", tmp_path / "no-shm")
    monkeypatch.delenv("TMPDIR")
    assert memory_roots() == []


def test_memory_left_is_the_least_room_of_every_cgroup_slurm_and_the_machine(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    root = fake_proc(tmp_path, monkeypatch, cgroup="0::/job_1/step_0\n", meminfo="MemAvailable:  67108864 kB\n")
    write_files(root / "v2", {"job_1/memory.max": f"{4 * GiB}\n", "job_1/memory.current": f"{GiB}\n",
                              "job_1/step_0/memory.max": "max\n", "job_1/step_0/memory.current": f"{GiB // 2}\n"})
    assert memory_left() == 3 * GiB  # the job's limit, set one level up, less what the job uses
    (root / "meminfo").write_text(f"MemAvailable:  {GiB // 1024} kB\n")
    assert memory_left() == GiB  # the machine has less left than the job could take
    monkeypatch.setenv("SLURM_MEM_PER_NODE", "16")  # MiB: less than this process already holds
    assert memory_left() == 0


def test_memory_left_reads_cgroup_v1_and_the_slurm_allocation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = fake_proc(tmp_path, monkeypatch, cgroup="5:cpuacct:/x\n4:memory:/slurm/uid_0/job_5\n")
    write_files(root / "v1", {"slurm/uid_0/job_5/memory.limit_in_bytes": f"{2 * GiB}\n",
                              "slurm/uid_0/job_5/memory.usage_in_bytes": f"{GiB // 2}\n",
                              "slurm/memory.limit_in_bytes": "9223372036854771712\n",  # no limit
                              "slurm/memory.usage_in_bytes": f"{8 * GiB}\n"})
    assert memory_left() == GiB + GiB // 2
    (root / "cgroup").write_text("")
    assert memory_left() is None  # nothing to go by: no cgroup, no SLURM, no meminfo
    monkeypatch.setenv("SLURM_MEM_PER_CPU", "100000")  # MiB per CPU, 2 CPUs
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
    left = memory_left()
    assert left is not None and 2 * 100_000 * MB - 4 * GiB < left < 2 * 100_000 * MB  # less this process's RSS


def test_a_zip_footprint_is_exact_from_its_central_directory(dest: Path) -> None:
    path = save(dest, "f.zip", zip_bytes([("p/", b""), ("p/empty", b""), ("p/one", b"x"),
                                          ("p/page", bytes(PAGE_SIZE)), ("p/more", bytes(PAGE_SIZE + 1))]))
    expected = 0 + PAGE_SIZE + PAGE_SIZE + 2 * PAGE_SIZE + 5 * ENTRY_OVERHEAD
    assert expected_footprint(path) == expected
    assert extract(path, dest).footprint == expected  # what the extraction counts as it writes


def test_a_tar_footprint_is_estimated_from_what_the_file_says(dest: Path) -> None:
    text = b"".join(b"line %d of some source code\n" % i for i in range(20_000))
    entries = [reg("p/a.py", text), reg("p/b.py", text[:5000])]
    plain = save(dest, "f.tar", tar_bytes(entries))
    assert expected_footprint(plain) == int(plain.stat().st_size * TAR_PAGE_FACTOR)
    gz = save(dest, "f.tar.gz", tar_bytes(entries, "gz"))
    assert gz.stat().st_size < plain.stat().st_size // 5
    assert expected_footprint(gz) == int(plain.stat().st_size * TAR_PAGE_FACTOR)  # gzip's trailer: the tar's size
    xz = save(dest, "f.tar.xz", tar_bytes(entries, "xz"))
    assert expected_footprint(xz) == int(xz.stat().st_size * COMPRESSED_TAR_FACTOR * TAR_PAGE_FACTOR)
    assert expected_footprint(save(dest, "page.zip", b"<html>not found</html>")) is None


def test_extraction_stops_at_its_footprint_limit_and_not_as_a_failure(dest: Path) -> None:
    data = [("p/a.py", b"a" * 10_000), ("p/b.py", b"b" * 10_000), ("p/c.py", b"c" * 10_000)]
    path = save(dest, "f.zip", zip_bytes(data))
    need = expected_footprint(path)
    assert need is not None
    with pytest.raises(OverFootprint) as caught:
        extract_archive(path, dest, max_bytes=BIG, max_members=100, footprint_limit=need - 1)
    assert not isinstance(caught.value, ExtractError)  # no fault of the archive: it goes elsewhere
    assert not (dest / "p/c.py").exists()  # stopped before the file that would pass the limit
    other = dest.parent / "dest-2"
    other.mkdir()
    assert extract_archive(path, other, max_bytes=BIG, max_members=100, footprint_limit=need).files == 3


def test_a_tar_member_over_the_footprint_limit_is_stopped_before_it_is_written(dest: Path) -> None:
    path = save(dest, "f.tar", tar_bytes([reg("p/small", b"x"), reg("p/big", bytes(2 * MB))]))
    with pytest.raises(OverFootprint):
        extract_archive(path, dest, max_bytes=BIG, max_members=100, footprint_limit=MB)
    assert (dest / "p/small").exists() and not (dest / "p/big").exists()


def test_an_archive_goes_to_ram_when_it_fits_budget_memory_and_free_space(
        dest: Path, ram_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save(dest, "f.zip", zip_bytes([("p/a.py", b"a" * 100_000)]))
    need = expected_footprint(path)
    assert need is not None
    fits = choose_memory_root(path, 100 * MB, roots=[ram_dir], memory=GiB)
    assert fits.root == ram_dir and fits.allowance == min(100 * MB, GiB // 2, free_bytes(ram_dir))
    for budget, memory, words in [(need - 1, GiB, "budget"), (100 * MB, 2 * need - 2, "memory"),
                                  (0, GiB, "no RAM budget left")]:
        placed = choose_memory_root(path, budget, roots=[ram_dir], memory=memory)
        assert placed.root is None and placed.allowance == 0 and words in placed.why, placed
    assert choose_memory_root(path, 100 * MB, roots=[], memory=GiB).root is None
    # the first folder full: the next one that has room
    second = ram_dir / "second"
    second.mkdir()
    monkeypatch.setattr(extract_module, "free_bytes", lambda root: 0 if root == ram_dir else GiB)
    placed = choose_memory_root(path, 100 * MB, roots=[ram_dir, second], memory=GiB)
    assert placed.root == second
    unknown = save(dest, "unknown.zip", b"PK\x03\x04 not really")  # no estimate: tried, and capped there
    assert choose_memory_root(unknown, 100 * MB, roots=[second], memory=GiB).root == second


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
