"""Safe extraction stops at its bounds: bytes written (zip bombs, lying sizes) and number of members."""

from __future__ import annotations

import io
import os
import struct
import zipfile
from pathlib import Path

import pytest
from helpers import (
    MB,
    disk_bytes,
    extract,
    refused,
    reg,
    save,
    tar_bytes,
    tlink,
    zip_bytes,
)

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


@pytest.mark.parametrize(
    ("name", "data", "limits", "files", "size"),
    [
        ("ten.tar", tar_bytes([reg(f"proj/{i:02}.txt", b"x") for i in range(10)]), {"max_members": 10}, 10, 10),
        ("exact.zip", zip_bytes([("a", bytes(1000)), ("b", bytes(24))]), {"max_bytes": 1024}, 2, 1024),
    ],
    ids=["members", "bytes"],
)
def test_member_and_byte_caps_are_inclusive(dest: Path, name: str, data: bytes, limits: dict[str, int], files: int,
                                            size: int) -> None:
    stats = extract(save(dest, name, data), dest, **limits)
    assert (stats.files, stats.bytes) == (files, size)
