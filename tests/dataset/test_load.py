"""Reading records back: load_images and load_metadata from h5, pkl or the record folder, ours or 2018's."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import types
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import RunsCode

from zenodo_hpc.core.errors import UserError
from zenodo_hpc.dataset.load import load_images, load_metadata
from zenodo_hpc.record.raster import rasterize
from zenodo_hpc.record.store import write_record

IMAGES = {
    "r/a.py": rasterize(b"import os\n" * 170),
    "r/u.txt": rasterize("ünïcödé 中文 😀\n".encode()),
    "r/empty.py": rasterize(b""),
}
META = {"hit": {"id": 3, "metadata": {"title": "t"}}, "tree": {"type": "dir", "children": {}},
        "source": {"kind": "zenodo"}, "stats": {"segments": 4}, "tool": {"name": "zenodo-hpc"}}


@pytest.fixture
def record(tmp_path: Path) -> Path:
    return write_record(tmp_path, "3", IMAGES, META, formats=["h5", "pkl"]).folder


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
        h5.attrs["format_version"] = 3
    with pytest.raises(UserError, match=r"written by a newer zenodo-hpc \(format_version 3; this one reads 1 and 2\)"):
        load_images(record)


# --- the published 2018 dataset ------------------------------------------------------------------------
#
# The fixtures below are written the way the 2018 code wrote its record folders, not with our writer:
# vsoch/zenodo-ml, slurm/run.py at commit 057302161b0f1abcb84edb519774de32d38703f0 (its last change,
# 2018-05-29), run in the image its Dockerfile builds (pandas, numpy, containertree==0.0.4):
#   - images: create_images() turns each file into a list of pandas ``DataFrame(...).values`` arrays, int64,
#     80 columns (lines padded with ' ' and cut at 80), 80 rows except the last image, which has the rows
#     that are left (run.py drops the file's last line, i.e. the empty string after a final newline);
#   - images_<id>.h5: save_h5() writes one dataset per image named "%s__%s" % (path, i) (h5py turns each
#     '/' of the path into a group), no compression;
#   - images_<id>.pkl: pickle.dump(images, ...) of {path: [arrays]} with Python 3's default protocol (3);
#   - metadata_<id>.pkl: pickle.dump({'tree': tree, 'hit': hit}, ...), tree = ContainerTree(
#     [{'Name': path, 'Size': size}, ...], tag=uid) of containertree 0.0.4: singularityhub/container-tree,
#     containertree/tree.py at commit 29ad371c991e72f4342f5e7016a95c877558cdfe (unchanged until 0.0.41),
#     classes containertree.tree.ContainerTree (root, data, folder_sep, count) and containertree.tree.Node
#     (filepath, children, leaf, tags, counter, and each key of the attrs dict lower-cased: name, size;
#     a folder's node is made with the attrs of the first file below it). (vsoch/containertree holds only
#     a GitHub Actions example, not the package.)

SOURCES_2018 = {
    "zenodo-ml-1a2b/analysis.py": "import os\n" * 170,  # 3 images: 80, 80 and 10 rows
    "zenodo-ml-1a2b/docs/README.md": "# Zenodo ML\n\nThis ünïcode – \u4e2d\u6587 😀 readme.\n",
    "zenodo-ml-1a2b/run.sh": "#!/bin/bash\n" + "echo " + "x" * 100 + "\n",  # a line cut at 80
}
HIT_2018 = {"id": 1065022, "doi": "10.5281/zenodo.1065022", "metadata": {"title": "zenodo-ml demo"},
            "files": [{"links": {"self": "https://zenodo.org/api/files/x/zenodo-ml-1a2b.zip"}}]}


def images_2018(text: str) -> list[np.ndarray]:
    """A file's images as the 2018 code made them: rows of 80 int64 code points, the last image short."""
    lines = text.split("\n")[:-1]  # run.py never keeps the last element of split('\n')
    rows = [[ord(c) for c in line[:80]] + [32] * (80 - len(line[:80])) for line in lines]
    return [np.array(rows[i:i + 80], dtype=np.int64) for i in range(0, len(rows), 80)]


def _stand_in_containertree(monkeypatch: pytest.MonkeyPatch) -> tuple[type, type]:
    """Classes named containertree.tree.ContainerTree and .Node, as pickle records them (no package needed)."""
    module = types.ModuleType("containertree.tree")

    class ContainerTree:
        pass

    class Node:
        pass

    for cls in (ContainerTree, Node):
        cls.__module__, cls.__qualname__ = "containertree.tree", cls.__name__
        setattr(module, cls.__name__, cls)
    package = types.ModuleType("containertree")
    package.tree = module  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "containertree", package)
    monkeypatch.setitem(sys.modules, "containertree.tree", module)
    return ContainerTree, Node


def tree_2018(monkeypatch: pytest.MonkeyPatch, files: dict[str, int], uid: int) -> object:
    """A ContainerTree with containertree 0.0.4's attributes, built the way its _make_tree built them."""
    tree_cls, node_cls = _stand_in_containertree(monkeypatch)

    def node(filepath: str, attrs: dict[str, object]) -> object:
        new = node_cls()
        new.filepath, new.children = filepath, []
        for key, value in attrs.items():
            setattr(new, key.lower(), value)
        new.leaf, new.tags, new.counter = False, {uid}, 1
        return new

    tree = tree_cls()
    tree.root, tree.folder_sep, tree.count = node("", {"size": 0, "Name": "/"}), "/", 1
    tree.data = [{"Name": name, "Size": size} for name, size in files.items()]
    for attrs in tree.data:
        current = tree.root
        for part in attrs["Name"].split("/"):
            found = next((c for c in current.children if c.filepath == part), None)
            if found is None:
                found = node(part, attrs)
                current.children.append(found)
                tree.count += 1
            else:
                found.counter += 1
            current = found
        current.leaf = True
    return tree


@pytest.fixture
def folder_2018(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A record folder of the published 2018 dataset: its h5, its pickle, its metadata pickle."""
    return write_folder_2018(tmp_path / "1065022", monkeypatch)


def write_folder_2018(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Write record 1065022 of the 2018 dataset into ``folder`` as the 2018 code wrote it (also used by
    tests/project/test_doc_commands.py for the 2018 page's recipes)."""
    folder.mkdir(parents=True)
    images = {path: images_2018(text) for path, text in SOURCES_2018.items()}
    with h5py.File(folder / "images_1065022.h5", "w") as h5:
        for image_id, image_dataset in images.items():
            for i, image in enumerate(image_dataset):
                h5.create_dataset(f"{image_id}__{i}", data=image)
    with open(folder / "images_1065022.pkl", "wb") as handle:
        pickle.dump(images, handle, protocol=3)
    sizes = {path: len(text.encode()) for path, text in SOURCES_2018.items()}
    metadata = {"tree": tree_2018(monkeypatch, sizes, 1065022), "hit": HIT_2018}
    with open(folder / "metadata_1065022.pkl", "wb") as handle:
        pickle.dump(metadata, handle, protocol=3)
    monkeypatch.delitem(sys.modules, "containertree")  # read back without containertree
    monkeypatch.delitem(sys.modules, "containertree.tree")
    return folder


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
