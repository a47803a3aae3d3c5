"""Reading records back: load_images and load_metadata from h5, pkl or the record folder."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from zenodo_hpc.errors import UserError
from zenodo_hpc.load import load_images, load_metadata
from zenodo_hpc.raster import rasterize
from zenodo_hpc.store import write_record

IMAGES = {
    "r/a.py": rasterize(b"import os\n" * 170),
    "r/u.txt": rasterize("ünïcödé 中文 😀\n".encode()),
    "r/empty.py": rasterize(b""),
}
META = {"hit": {"id": 3, "metadata": {"title": "t"}}, "tree": {"type": "dir", "children": {}},
        "source": {"kind": "zenodo"}, "stats": {"segments": 4}, "tool": {"name": "zenodo-hpc"}}


@pytest.fixture
def record(tmp_path: Path) -> Path:
    return write_record(tmp_path, "3", IMAGES, META).folder


@pytest.mark.parametrize("which", ["folder", "images_3.h5", "images_3.pkl"])
def test_load_images_equals_what_was_rasterized(record: Path, which: str) -> None:
    path = record if which == "folder" else record / which
    images = load_images(path)
    assert sorted(images) == sorted(IMAGES)
    for key, want in IMAGES.items():
        assert images[key].dtype == np.uint32
        assert images[key].shape == want.shape
        np.testing.assert_array_equal(images[key], want)


def test_folder_prefers_h5_and_falls_back_to_pkl(record: Path) -> None:
    (record / "images_3.h5").unlink()
    np.testing.assert_array_equal(load_images(record)["r/a.py"], IMAGES["r/a.py"])


@pytest.mark.parametrize("which", ["folder", "metadata_3.json", "metadata_3.pkl"])
def test_load_metadata(record: Path, which: str) -> None:
    path = record if which == "folder" else record / which
    assert load_metadata(path) == META


def test_missing_path_and_non_record_folder(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_images(tmp_path / "nope")
    (tmp_path / "5").mkdir()
    with pytest.raises(UserError, match=r"not a record folder: it has no images_5\.h5 or images_5\.pkl"):
        load_images(tmp_path / "5")


def test_corrupt_and_foreign_files_are_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "images_1.h5"
    bad.write_bytes(b"not hdf5 at all")
    with pytest.raises(UserError, match="cannot read HDF5 file"):
        load_images(bad)
    foreign = tmp_path / "images_2.h5"
    with h5py.File(foreign, "w") as h5:
        h5["x"] = 1
    with pytest.raises(UserError, match="not a zenodo-hpc images file"):
        load_images(foreign)
    truncated = tmp_path / "images_4.pkl"
    truncated.write_bytes(b"\x80\x04\x95")
    with pytest.raises(UserError, match="cannot read pickle"):
        load_images(truncated)
