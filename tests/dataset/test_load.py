"""Reading records back: load_images, load_files and load_metadata from h5, pkl or the record folder, ours or 2018's."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import RunsCode
from published_2018 import HIT_2018, SOURCES_2018, write_folder_2018

from zenodo_hpc.core.errors import UserError
from zenodo_hpc.dataset.decode import NoStoredText
from zenodo_hpc.dataset.load import load_files, load_images, load_metadata, records_without_text
from zenodo_hpc.record.raster import rasterize
from zenodo_hpc.record.store import write_record

TEXTS = {
    "r/a.py": b"import os\n" * 170,
    "r/u.txt": "ünïcödé 中文 😀\n".encode(),
    "r/empty.py": b"",
}
IMAGES = {path: rasterize(text) for path, text in TEXTS.items()}
META = {"hit": {"id": 3, "metadata": {"title": "t"}}, "tree": {"type": "dir", "children": {}},
        "source": {"kind": "zenodo"}, "stats": {"segments": 4}, "tool": {"name": "zenodo-hpc"}}


@pytest.fixture
def record(tmp_path: Path) -> Path:
    return write_record(tmp_path, "3", IMAGES, META, formats=["h5", "pkl"], texts=TEXTS).folder


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


def test_format_1_files_are_still_read(tmp_path: Path) -> None:
    """Format 1 as docs/formats.md described it: one /segments dataset in the record's widest dtype."""
    keys = sorted(IMAGES)
    segments = np.concatenate([IMAGES[k] for k in keys])
    offsets = np.cumsum([0] + [IMAGES[k].shape[0] for k in keys]).astype(np.uint64)
    with h5py.File(tmp_path / "images_3.h5", "w") as h5:
        h5.attrs.update({"format": "zenodo-hpc-images", "format_version": 1, "record_id": "3"})
        h5.create_dataset("segments", data=segments.astype(np.uint32), chunks=(4, 80, 80), compression="gzip",
                          shuffle=True)
        h5.create_dataset("files/path", data=np.array(keys, dtype=object), dtype=h5py.string_dtype("utf-8"))
        h5.create_dataset("files/offset", data=offsets)
    images = load_images(tmp_path / "images_3.h5")
    assert sorted(images) == keys
    for key in keys:
        np.testing.assert_array_equal(images[key], IMAGES[key])


def test_a_newer_format_version_is_refused_by_name(record: Path) -> None:
    with h5py.File(record / "images_3.h5", "a") as h5:
        h5.attrs["format_version"] = 4
    with pytest.raises(UserError, match=r"written by a newer zenodo-hpc \(format_version 4; this one reads 1, 2 "
                                        r"and 3\)"):
        load_images(record)
    with pytest.raises(UserError, match=r"format_version 4; this one reads 1, 2 and 3"):
        load_files(record)


@pytest.mark.parametrize("which", ["folder", "images_3.h5"])
def test_load_files_gives_back_each_file_s_bytes(record: Path, which: str) -> None:
    assert load_files(record if which == "folder" else record / "images_3.h5") == TEXTS


def test_records_without_text_are_refused_by_load_files_and_listed(tmp_path: Path) -> None:
    """Format 2 (written without text, as records processed before were), a pickle-only folder: one line each,
    never an empty dict; ``records_without_text`` names them and not the format 3 record."""
    with_text = write_record(tmp_path, "3", IMAGES, META, texts=TEXTS).folder
    format_2 = write_record(tmp_path, "4", IMAGES, META).folder
    pickle_only = write_record(tmp_path, "5", IMAGES, META, formats=["pkl"], texts=TEXTS).folder
    with pytest.raises(NoStoredText, match=r"images_4\.h5: holds no text \(format_version 2: .*process the record "
                                           r"again"):
        load_files(format_2)
    with pytest.raises(NoStoredText, match=r"images_5\.pkl: holds no text"):
        load_files(pickle_only)
    assert load_images(format_2).keys() == load_images(with_text).keys()  # its images read as before
    assert records_without_text([with_text, format_2, pickle_only]) == ["4", "5"]


def test_the_formats_page_text_recipe_runs_as_written_with_h5py_alone(tmp_path: Path) -> None:
    """docs/formats.md's ``read_texts``, pasted into a fresh interpreter in a record's folder (the record the page
    names), gives what load_files gives; on a format 2 file it says there is no text."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "formats.md").read_text()
    (recipe,) = [b for b in re.findall(r"```python\n(.*?)```", docs, re.S) if "def read_texts" in b]
    folder = write_record(tmp_path, "1065022", IMAGES, META, texts=TEXTS).folder
    dump = "\nimport json\nprint(json.dumps({p: t.hex() for p, t in texts.items()}))\n"
    done = subprocess.run([sys.executable, "-c", recipe + dump], cwd=folder, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert {p: bytes.fromhex(t) for p, t in json.loads(done.stdout).items()} == load_files(folder) == TEXTS
    write_record(tmp_path / "old", "1065022", IMAGES, META)
    done = subprocess.run([sys.executable, "-c", recipe], cwd=tmp_path / "old" / "1065022", capture_output=True,
                          text=True, timeout=120)
    assert done.returncode != 0 and "format_version 2 holds no text" in done.stderr


# --- the published 2018 dataset (rebuilt as the 2018 code wrote it: tests/published_2018.py) -------------


@pytest.fixture
def folder_2018(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A record folder of the published 2018 dataset: its h5, its pickle, its metadata pickle."""
    return write_folder_2018(tmp_path / "1065022", monkeypatch)


def test_2018_fixture_is_what_the_2018_code_wrote(folder_2018: Path) -> None:
    with h5py.File(folder_2018 / "images_1065022.h5") as h5:
        assert list(h5) == ["zenodo-ml-1a2b"] and isinstance(h5["zenodo-ml-1a2b/docs"], h5py.Group)
        assert h5["zenodo-ml-1a2b/analysis.py__2"].shape == (10, 80)
        assert h5["zenodo-ml-1a2b/analysis.py__0"].dtype == np.int64
    with pytest.raises(ModuleNotFoundError, match="containertree"):
        pickle.loads((folder_2018 / "metadata_1065022.pkl").read_bytes())


@pytest.mark.parametrize("which", ["folder", "images_1065022.h5", "images_1065022.pkl"])
def test_2018_images_are_read_and_the_last_image_padded(folder_2018: Path, which: str) -> None:
    images = load_images(folder_2018 if which == "folder" else folder_2018 / which)
    assert sorted(images) == sorted(SOURCES_2018)
    for path, text in SOURCES_2018.items():
        # the 2018 rows, padded with rows of spaces: what rasterize gives for these files
        want = rasterize(text.encode())
        assert images[path].dtype == np.uint32 and images[path].shape == want.shape, path
        np.testing.assert_array_equal(images[path], want, err_msg=path)
    assert (images["zenodo-ml-1a2b/analysis.py"][2, 10:] == 32).all()


def test_the_2018_files_hold_no_text_and_load_files_says_so(folder_2018: Path) -> None:
    with pytest.raises(NoStoredText, match="holds no text .*the 2018 dataset's files have only images"):
        load_files(folder_2018)


def test_2018_metadata_is_read_without_containertree(folder_2018: Path) -> None:
    for path in (folder_2018, folder_2018 / "metadata_1065022.pkl"):
        meta = load_metadata(path)
        assert meta["hit"] == HIT_2018
        sizes = {p: len(t.encode()) for p, t in SOURCES_2018.items()}
        assert meta["tree"] == {"type": "dir", "children": {"zenodo-ml-1a2b": {"type": "dir", "children": {
            "analysis.py": {"type": "file", "size": sizes["zenodo-ml-1a2b/analysis.py"]},
            "docs": {"type": "dir", "children": {
                "README.md": {"type": "file", "size": sizes["zenodo-ml-1a2b/docs/README.md"]}}},
            "run.sh": {"type": "file", "size": sizes["zenodo-ml-1a2b/run.sh"]},
        }}}}
    assert "containertree" not in sys.modules


def test_2018_h5_with_a_gap_or_a_foreign_dataset_is_a_clear_error(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "images_1.h5", "w") as h5:
        h5.create_dataset("a.py__0", data=np.full((80, 80), 32, dtype=np.int64))
        h5.create_dataset("a.py__2", data=np.full((3, 80), 32, dtype=np.int64))
    with pytest.raises(UserError, match=r"a\.py has images \[0, 2\], not 0 to 1"):
        load_images(tmp_path / "images_1.h5")
    with h5py.File(tmp_path / "images_2.h5", "w") as h5:
        h5.create_dataset("a.py__0", data=np.zeros((81, 80), dtype=np.int64))
    with pytest.raises(UserError, match=r"image 0 has shape \(81, 80\), expected at most \(80, 80\)"):
        load_images(tmp_path / "images_2.h5")


# --- a folder with both images files: the pickle is never opened ------------------------------------


def test_a_folder_with_both_reads_the_h5_and_never_unpickles(record: Path) -> None:
    (record / "images_3.pkl").write_bytes(pickle.dumps({"a.py": [RunsCode(record / "ran")]}))
    assert sorted(load_images(record)) == sorted(IMAGES)
    assert not (record / "ran").exists()


@pytest.mark.skipif(shutil.which("mksquashfs") is None, reason="mksquashfs not on PATH (squashfs-tools)")
def test_2018_record_is_read_out_of_a_squashfs_image(folder_2018: Path, tmp_path: Path) -> None:
    pytest.importorskip("PySquashfsImage", reason="reading an image needs the [image] extra")
    image = tmp_path / "zenodo-ml.sqsh"
    root = tmp_path / "root"
    root.mkdir()
    os.rename(folder_2018, root / "1065022")
    subprocess.run(["mksquashfs", str(root), str(image), "-noappend", "-quiet"], check=True, capture_output=True)
    images = load_images(f"{image}:1065022")
    np.testing.assert_array_equal(images["zenodo-ml-1a2b/analysis.py"],
                                  rasterize(SOURCES_2018["zenodo-ml-1a2b/analysis.py"].encode()))
    assert load_metadata(f"{image}:1065022")["hit"] == HIT_2018
