"""Safe extraction names what is broken: truncated, corrupt or encrypted archives, and non-archives."""

from __future__ import annotations

import gzip
import io
import os
import random
import zipfile
from pathlib import Path

import pytest
from helpers import (
    refused,
    reg,
    save,
    tar_bytes,
    zfile,
    zip_bytes,
)

from zenodo_hpc.core.errors import ExtractError
from zenodo_hpc.record.extract import (
    archive_kind,
)

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


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("record.zip", HTML, "record.zip looks like an HTML page, not an archive"),
        ("noise.tar.gz", _incompressible(4096), "noise.tar.gz is not a zip or tar archive (unrecognised content)"),
        ("nothing.zip", b"", "nothing.zip is empty, not an archive"),
        ("files.zip", b'{"status": 404, "message": "not found"}',
         "files.zip looks like a JSON document, not an archive"),
    ],
    ids=["html-page", "random-bytes", "empty-file", "json-error"],
)
def test_what_is_not_an_archive_is_named(dest: Path, name: str, data: bytes, message: str) -> None:
    path = save(dest, name, data)
    with pytest.raises(ExtractError) as caught:
        archive_kind(path)
    assert caught.value.reason == "bad_archive" and str(caught.value) == message
    assert refused(path, dest, "bad_archive") == message
