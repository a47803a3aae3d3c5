"""zenodo_hpc.dataset.decode: a record's files decoded from their bytes (images h5 of format 2 and 3, the text of
format 3, images and metadata pickles, metadata JSON) and the safe unpickler, called directly; reading them from
a folder is test_load.py's."""

from __future__ import annotations

import hashlib
import pickle
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from helpers import RunsCode

from zenodo_hpc.core.errors import UserError
from zenodo_hpc.dataset.decode import (
    ContainerTreeObject,
    NoStoredText,
    images_from_pickle,
    iter_texts_h5,
    metadata_from_json,
    metadata_from_pickle,
    read_file,
    read_images_h5,
    read_texts_h5,
    tree_from_containertree,
)
from zenodo_hpc.dataset.load import load_images, load_metadata
from zenodo_hpc.record.raster import rasterize
from zenodo_hpc.record.store import h5_filter, write_images_h5

IMAGES = {"a.py": rasterize(b"import os\n" * 90), "u.txt": rasterize("\u4e2d\u6587 \U0001f600\n".encode()),
          "empty.py": rasterize(b"")}


def write_h5(path: Path) -> Path:
    write_images_h5(path, "3", sorted(IMAGES), IMAGES, {"width": 80, "height": 80}, h5_filter("gzip-4"))
    return path


def test_format_2_reads_back_each_file_in_uint32(tmp_path: Path) -> None:
    images = read_images_h5(write_h5(tmp_path / "images_3.h5"))
    with h5py.File(tmp_path / "images_3.h5") as h5:
        assert sorted(k for k in h5 if k.startswith("segments_")) == ["segments_uint32", "segments_uint8"]
    assert sorted(images) == sorted(IMAGES)
    for key, want in IMAGES.items():
        assert images[key].dtype == np.uint32
        np.testing.assert_array_equal(images[key], want, err_msg=key)
    assert images["empty.py"].shape == (0, 80, 80)
    with open(tmp_path / "images_3.h5", "rb") as handle:  # a file object reads the same (as out of an image)
        assert sorted(read_images_h5(handle)) == sorted(IMAGES)


def damage(path: Path, name: str, value: Any) -> None:
    with h5py.File(path, "a") as h5:
        del h5[name]
        h5[name] = value


@pytest.mark.parametrize(("name", "value", "message"), [
    ("files/start", np.array([0, 0], dtype=np.uint64), r"damaged: /files/path, offset, itemsize and start do not "
                                                       r"agree"),
    ("files/start", np.array([7, 0, 0], dtype=np.uint64), r"damaged: a\.py has images 7 to 9 of 2 in "
                                                          r"/segments_uint8"),
    ("segments_uint32", None, r"damaged: files are stored in /segments_uint32, which is missing"),
])
def test_a_damaged_format_2_file_is_one_line_naming_what_disagrees(tmp_path: Path, name: str, value: Any,
                                                                   message: str) -> None:
    path = write_h5(tmp_path / "images_3.h5")
    if value is None:
        with h5py.File(path, "a") as h5:
            del h5[name]
    else:
        damage(path, name, value)
    with pytest.raises(UserError, match=message) as caught:
        read_images_h5(path)
    assert "\n" not in str(caught.value)


TEXTS = {"a.py": b"import os\n" * 90, "u.txt": "\u4e2d\u6587 \U0001f600\n".encode(), "empty.py": b""}


def write_h5_with_text(path: Path) -> Path:
    images = {key: rasterize(text) for key, text in TEXTS.items()}
    write_images_h5(path, "3", sorted(TEXTS), images, {"width": 80, "height": 80}, h5_filter("gzip-4"), texts=TEXTS)
    return path


def test_format_3_text_reads_back_file_by_file_with_its_sha256(tmp_path: Path) -> None:
    path = write_h5_with_text(tmp_path / "images_3.h5")
    stored = list(iter_texts_h5(path))
    assert [s.path for s in stored] == sorted(TEXTS)  # the h5's order: sorted paths
    assert {s.path: s.content for s in stored} == TEXTS == read_texts_h5(path)
    assert all(s.sha256 == hashlib.sha256(TEXTS[s.path]).hexdigest() for s in stored)
    with h5py.File(path) as h5:
        assert h5.attrs["format_version"] == 3 and h5["files/content"].compression == "gzip"
        assert h5["files/sha256"].shape == (3, 32) and list(h5["files/content_offset"][()]) == [0, 900, 900, 912]
    assert sorted(read_images_h5(path)) == sorted(TEXTS)  # format 3's images read as format 2's


def test_format_2_and_2018_files_hold_no_text_and_say_so(tmp_path: Path) -> None:
    with pytest.raises(NoStoredText, match=r"holds no text \(format_version 2: processed before zenodo-hpc kept each "
                                           r"file's text; process the record again to add it\)"):
        read_texts_h5(write_h5(tmp_path / "images_3.h5"))
    with h5py.File(tmp_path / "images_2018.h5", "w") as h5:
        h5["a.py__0"] = np.full((3, 80), 32, dtype=np.int64)
    with pytest.raises(NoStoredText, match="holds no text .*the 2018 dataset's files have only images"):
        read_texts_h5(tmp_path / "images_2018.h5")


@pytest.mark.parametrize(("name", "value", "message"), [
    ("files/content_offset", np.array([0, 900, 2, 912], dtype=np.uint64), "does not run from 0 to the 912 bytes"),
    ("files/content_offset", np.array([0, 900, 900, 913], dtype=np.uint64), "does not run from 0 to the 912 bytes"),
    ("files/content_offset", np.array([5, 900, 900, 912], dtype=np.uint64), "does not run from 0 to the 912 bytes"),
    ("files/content_offset", np.array([0, 2**64 - 1, 900, 912], dtype=np.uint64), "offsets past 2\\*\\*63"),
    ("files/content_offset", np.array([0, 900, 912], dtype=np.uint64), "content_offset and sha256 do not agree"),
    ("files/sha256", np.zeros((3, 16), dtype=np.uint8), "content_offset and sha256 do not agree"),
    ("files/sha256", np.zeros((3, 32), dtype=np.uint8), "damaged: the text of a.py does not match its sha256"),
    ("files/content", np.zeros(912, dtype=np.uint16), "not a 1-D uint8 dataset"),
    ("files/content", np.zeros((912, 1), dtype=np.uint8), "not a 1-D uint8 dataset"),
    ("files/content", np.frombuffer(b"import os\n" * 89 + b"import Os\n" + TEXTS["u.txt"], dtype=np.uint8),
     "damaged: the text of a.py does not match its sha256"),
])
def test_a_damaged_or_hostile_text_index_is_one_line(tmp_path: Path, name: str, value: Any, message: str) -> None:
    path = write_h5_with_text(tmp_path / "images_3.h5")
    damage(path, name, value)
    with pytest.raises(UserError, match=message) as caught:
        read_texts_h5(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_a_missing_text_dataset_is_one_line(tmp_path: Path) -> None:
    path = write_h5_with_text(tmp_path / "images_3.h5")
    with h5py.File(path, "a") as h5:
        del h5["files/content"]
    with pytest.raises(UserError, match="cannot read HDF5 file"):
        read_texts_h5(path)


def test_our_pickles_come_back_as_written_and_2018_ones_padded() -> None:
    ours = {"a.py": list(IMAGES["a.py"].astype(np.int32)), "none.py": []}
    images = images_from_pickle(pickle.dumps(ours, protocol=4), "images_3.pkl")
    np.testing.assert_array_equal(images["a.py"], IMAGES["a.py"])
    assert images["a.py"].dtype == np.uint32 and images["none.py"].shape == (0, 80, 80)
    legacy = {"b.py": [np.full((80, 80), 65, dtype=np.int64), np.full((3, 5), 66, dtype=np.int64),
                       np.empty((0, 80), dtype=np.int64)]}  # the last image short, an image of no rows dropped
    images = images_from_pickle(pickle.dumps(legacy, protocol=3), "images_1.pkl")
    assert images["b.py"].shape == (2, 80, 80)
    assert (images["b.py"][1, :3, :5] == 66).all() and (images["b.py"][1, 3:] == 32).all()
    assert (images["b.py"][1, :, 5:] == 32).all()


@pytest.mark.parametrize(("payload", "message"), [
    ([np.zeros((80, 80), dtype=np.int32)], r"expected a dict of file path -> list of arrays$"),
    ({"a.py": 3}, r"expected a dict of file path -> list of \(80, 80\) arrays \(TypeError: "),
    ({"a.py": [np.full((2, 2), -1, dtype=np.int64)]}, r"a\.py: image 0 holds values that are not code points"),
])
def test_an_images_pickle_of_another_shape_is_one_line(payload: Any, message: str) -> None:
    with pytest.raises(UserError, match=rf"^images_1\.pkl: {message}"):
        images_from_pickle(pickle.dumps(payload), "images_1.pkl")


def test_metadata_json_and_pickle_must_be_a_dict() -> None:
    assert metadata_from_json(b'{"hit": {"id": 3}}', "m.json") == {"hit": {"id": 3}}
    with pytest.raises(UserError, match=r"^m\.json: cannot read metadata JSON \("):
        metadata_from_json(b'{"hit": ', "m.json")
    with pytest.raises(UserError, match=r"^m\.json: cannot read metadata JSON \("):
        metadata_from_json(b"\xff\xfe{}", "m.json")
    with pytest.raises(UserError, match=r"^m\.json: expected a metadata dict$"):
        metadata_from_json(b"[1]", "m.json")
    with pytest.raises(UserError, match=r"^m\.pkl: expected a metadata dict$"):
        metadata_from_pickle(pickle.dumps([1]), "m.pkl")


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_plain_values_and_arrays_unpickle_in_every_protocol(protocol: int) -> None:
    meta = {"hit": {"id": 3, "title": "t"}, "tags": {"a", "b"}, "frozen": frozenset({1}), "raw": b"\x00\xff",
            "buffer": bytearray(b"ab"), "z": 1 + 2j, "array": np.arange(6, dtype=np.int64).reshape(2, 3),
            "scalar": np.float64(0.5)}
    back = metadata_from_pickle(pickle.dumps(meta, protocol=protocol), "metadata_3.pkl")
    np.testing.assert_array_equal(back.pop("array"), meta.pop("array"))
    assert back == meta


def test_protocol_2_arrays_and_bytes_unpickle() -> None:
    # protocol 2 spells bytes as _codecs.encode and numpy's functions as in any protocol
    meta = {"raw": b"\x00\xff", "array": np.arange(3, dtype=np.int32)}
    back = metadata_from_pickle(pickle.dumps(meta, protocol=2), "metadata_3.pkl")
    assert back["raw"] == meta["raw"]
    np.testing.assert_array_equal(back["array"], meta["array"])


def test_a_containertree_tree_becomes_todays_tree() -> None:
    def node(filepath: str, children: list[Any] | None = None, **attrs: Any) -> ContainerTreeObject:
        made = ContainerTreeObject()
        made.__setstate__({"filepath": filepath, "children": children or [], **attrs})
        return made

    tree = ContainerTreeObject()
    tree.__setstate__(({"root": node("", [
        node("src", [node("b.py", leaf=True, size=12), node("a.py", leaf=True)], leaf=False, size=12, name="a"),
        node("empty", leaf=False),
    ])}, None))
    assert tree_from_containertree(tree) == {"type": "dir", "children": {
        "empty": {"type": "dir", "children": {}},
        "src": {"type": "dir", "children": {"a.py": {"type": "file"}, "b.py": {"type": "file", "size": 12}}},
    }}
    assert tree_from_containertree(ContainerTreeObject()) == {"type": "dir", "children": {}}  # no root


def test_read_file_says_which_file_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"nowhere\.pkl: cannot read it \("):
        read_file(tmp_path / "nowhere.pkl")


# --- pickles cannot run code (through load_images and load_metadata, as a reader meets them) --------------------


@pytest.mark.parametrize("where", ["images", "metadata", "inside"])
def test_a_pickle_that_would_run_code_is_refused_and_runs_nothing(tmp_path: Path, where: str) -> None:
    marker = tmp_path / "ran"
    evil = RunsCode(marker)
    folder = tmp_path / "6"
    folder.mkdir()
    payload = {"a.py": [evil]} if where == "images" else {"hit": evil, "tree": {}} if where == "metadata" else \
        {"a.py": [np.zeros((80, 80), dtype=np.int32), {"x": evil}]}
    name = "metadata_6.pkl" if where == "metadata" else "images_6.pkl"
    (folder / name).write_bytes(pickle.dumps(payload, protocol=4))
    reader = load_metadata if where == "metadata" else load_images
    with pytest.raises(UserError, match=rf"{name}: refused: this pickle would call posix\.system, which is not a "
                                        r"numpy array, a plain value or a containertree tree .*nothing was run"):
        reader(folder)
    assert not marker.exists()


def test_other_ways_to_run_code_are_refused_too(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    attacks = {
        "builtins.eval": b"cbuiltins\neval\n(Vopen('%s', 'w')\ntR." % str(marker).encode(),
        "builtins.getattr": b"cbuiltins\ngetattr\n(cnumpy\nndarray\nVtofile\ntR.",
        "numpy.load": b"\x80\x04cnumpy\nload\n(V%s\ntR." % str(marker).encode(),
        "subprocess.Popen": b"(dVx\n(csubprocess\nPopen\n((Vtouch\nV%s\nltRls." % str(marker).encode(),
    }
    for name, data in attacks.items():
        (tmp_path / "images_1.pkl").write_bytes(data)
        with pytest.raises(UserError, match=rf"refused: this pickle would call {name.replace('.', '[.]')},"):
            load_images(tmp_path / "images_1.pkl")
    assert not marker.exists()


def test_containertree_stand_ins_hold_attributes_only(tmp_path: Path) -> None:
    # REDUCE on a containertree "class" with arguments: a stand-in, whatever the arguments; nothing imported
    data = b"\x80\x03}q\x00(X\x03\x00\x00\x00hitq\x01}X\x04\x00\x00\x00treeq\x02ccontainertree.tree\nContainerTree\n" \
           b"X\x08\x00\x00\x00rm -rf /\x85R}X\x04\x00\x00\x00rootN\x73bu."
    (tmp_path / "metadata_1.pkl").write_bytes(data)
    meta = load_metadata(tmp_path / "metadata_1.pkl")
    assert meta == {"hit": {}, "tree": {"type": "dir", "children": {}}}
    assert "containertree" not in sys.modules
