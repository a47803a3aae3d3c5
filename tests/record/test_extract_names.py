"""Safe extraction skips and reports a member with an odd name (not UTF-8, too deep, too long) and goes on."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest
from helpers import (
    MB,
    assert_nothing_outside,
    extract,
    refused,
    reg,
    save,
    tar_bytes,
    tdir,
    tlink,
    zip_bytes,
)

from zenodo_hpc.record.extract import (
    MAX_DEPTH,
    MAX_LISTED_SKIPS,
    MAX_SKIP_KEY_CHARS,
    name_problem,
    printable_name,
)

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


@pytest.mark.parametrize(
    ("name", "data"),
    [
        *[("evil.tar", tar_bytes([reg("proj/ok.py", b"ok"), reg(name, b"x")]))
          for name in ["../outside/caf\udce9", "/abs/caf\udce9", "proj/../../d/" * 60 + "x"]],
        ("evil.tar", tar_bytes([tlink("proj/l\udcff", "../../outside")])),
        ("evil.zip", zip_with_raw_names([("../outside/caf\u00e9", b"x")], {"caf\u00e9": b"caf\xff\xfe"})),
    ],
    ids=["tar-dotdot", "tar-absolute", "tar-too-deep-and-dotdot", "tar-symlink", "zip-dotdot"],
)
def test_an_odd_name_that_also_escapes_is_still_unsafe(dest: Path, name: str, data: bytes) -> None:
    refused(save(dest, name, data), dest, "unsafe_archive")
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
