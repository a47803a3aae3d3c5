"""The record writer (SPEC section 5): the four files, atomically, byte-identical on re-runs."""

from __future__ import annotations

import json
import pickle
import resource
import signal
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import call_as_nobody

from zenodo_hpc.errors import UserError
from zenodo_hpc.raster import rasterize
from zenodo_hpc.store import check_record_id, record_file_names, write_record

IMAGES = {
    "top/b.py": rasterize(b"print('b')\n" * 100),
    "top/a.txt": rasterize("naïve – ünïcode\n".encode()),
    "top/empty.txt": rasterize(b""),
    "top/emoji.md": rasterize("😀\n".encode()),
}
METADATA = {"hit": {"id": 7}, "tree": {"type": "dir", "children": {}}, "source": None, "stats": {"files": 4},
            "tool": {"name": "zenodo-hpc", "version": "0", "config_sha256": "x"}}


def write(data_dir: Path, **kwargs: object):
    return write_record(data_dir, "7", IMAGES, METADATA, raster_attrs={"width": 80, "height": 80}, **kwargs)


def test_writes_the_four_files_and_nothing_else(tmp_path: Path) -> None:
    written = write(tmp_path)
    folder = tmp_path / "7"
    assert written.folder == folder
    assert sorted(p.name for p in folder.iterdir()) == sorted(record_file_names("7", ["h5", "pkl"]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["7"]  # no staging folder left
    assert written.bytes == sum(p.stat().st_size for p in folder.iterdir())


def test_formats_select_the_image_files(tmp_path: Path) -> None:
    write(tmp_path, formats=["h5"])
    assert sorted(p.name for p in (tmp_path / "7").iterdir()) == ["images_7.h5", "metadata_7.json",
                                                                   "metadata_7.pkl"]


def test_rewrite_is_byte_identical(tmp_path: Path) -> None:
    write(tmp_path / "one")
    write(tmp_path / "two")
    write(tmp_path / "two")  # over an existing record folder
    for name in record_file_names("7", ["h5", "pkl"]):
        assert (tmp_path / "one" / "7" / name).read_bytes() == (tmp_path / "two" / "7" / name).read_bytes(), name


def test_h5_layout_is_one_compressed_dataset_with_paths_and_offsets(tmp_path: Path) -> None:
    write(tmp_path)
    with h5py.File(tmp_path / "7" / "images_7.h5") as h5:
        datasets: list[str] = []
        h5.visititems(lambda name, obj: datasets.append(name) if isinstance(obj, h5py.Dataset) else None)
        assert sorted(datasets) == ["files/offset", "files/path", "segments"]
        seg = h5["segments"]
        assert seg.shape == (sum(a.shape[0] for a in IMAGES.values()), 80, 80)
        assert seg.compression == "gzip" and seg.dtype == np.uint32  # the emoji needs 32 bits
        paths = list(h5["files/path"].asstr()[()])
        assert paths == sorted(IMAGES)
        offsets = h5["files/offset"][()]
        for i, path in enumerate(paths):
            np.testing.assert_array_equal(seg[offsets[i]:offsets[i + 1]], IMAGES[path])
        assert h5.attrs["record_id"] == "7" and h5.attrs["format_version"] == 1


def test_ascii_record_is_stored_in_one_byte_per_pixel(tmp_path: Path) -> None:
    write_record(tmp_path, "8", {"a.py": rasterize(b"x = 1\n")}, METADATA)
    with h5py.File(tmp_path / "8" / "images_8.h5") as h5:
        assert h5["segments"].dtype == np.uint8


def test_pickles_and_json_have_the_2018_shapes_and_plain_types(tmp_path: Path) -> None:
    write(tmp_path)
    legacy = pickle.loads((tmp_path / "7" / "images_7.pkl").read_bytes())
    assert type(legacy) is dict and sorted(legacy) == sorted(IMAGES)
    assert legacy["top/empty.txt"] == []
    assert all(seg.shape == (80, 80) and seg.dtype == np.uint32 for seg in legacy["top/b.py"])
    assert len(legacy["top/b.py"]) == 2
    assert pickle.loads((tmp_path / "7" / "metadata_7.pkl").read_bytes()) == METADATA
    assert json.loads((tmp_path / "7" / "metadata_7.json").read_text()) == METADATA


def test_failure_leaves_nothing_visible(tmp_path: Path) -> None:
    bad = dict(METADATA, stats={"not json": {1, 2}})
    with pytest.raises(TypeError):
        write_record(tmp_path, "9", IMAGES, bad)
    assert list(tmp_path.iterdir()) == []


def test_bad_record_ids_are_refused() -> None:
    assert check_record_id("1065022") == "1065022"
    for bad in ["", "../x", "a/b", ".hidden", "x" * 200, "a b"]:
        with pytest.raises(UserError, match="bad record id"):
            check_record_id(bad)


def test_unwritable_output_folder_is_a_clear_error(shared_tmp: Path) -> None:
    out = shared_tmp / "readonly"
    out.mkdir(mode=0o555)
    out.chmod(0o555)
    with pytest.raises(UserError, match=r"cannot write record 7 in .*readonly: Permission denied"):
        call_as_nobody(write, out)
    assert list(out.iterdir()) == []


def _write_with_file_size_limit(data_dir: Path, limit: int) -> None:
    """Writes beyond ``limit`` bytes fail with EFBIG, as a full disk fails with ENOSPC."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    write(data_dir)


def test_disk_full_while_writing_leaves_nothing_visible(shared_tmp: Path) -> None:
    out = shared_tmp / "out"
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    with pytest.raises(UserError, match="cannot write record 7"):
        call_as_nobody(_write_with_file_size_limit, out, 20_000)
    assert list(out.iterdir()) == []
