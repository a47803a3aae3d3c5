"""The record writer (docs/formats.md): the four files, atomically, byte-identical on re-runs."""

from __future__ import annotations

import hashlib
import json
import pickle
import pickletools
import resource
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import call_as_nobody
from registry_venv import install, throwaway_venv

from zenodo_hpc.core.errors import UserError
from zenodo_hpc.record.raster import rasterize
from zenodo_hpc.record.store import check_record_id, h5_filter, record_file_names, write_record

TEXTS = {
    "top/b.py": b"print('b')\n" * 100,
    "top/a.txt": "naïve – ünïcode\n".encode(),
    "top/empty.txt": b"",
    "top/emoji.md": "😀\n".encode(),
}
IMAGES = {path: rasterize(text) for path, text in TEXTS.items()}
METADATA = {"hit": {"id": 7}, "tree": {"type": "dir", "children": {}}, "source": None, "stats": {"files": 4},
            "tool": {"name": "zenodo-hpc", "version": "0", "config_sha256": "x"}}


def write(data_dir: Path, **kwargs: object):
    kwargs.setdefault("formats", ["h5", "pkl"])
    kwargs.setdefault("texts", TEXTS)
    return write_record(data_dir, "7", IMAGES, METADATA, raster_attrs={"width": 80, "height": 80}, **kwargs)


def hdf5plugin_or_skip() -> None:
    pytest.importorskip("hdf5plugin", reason="zstd needs hdf5plugin: python -m pip install 'hdf5plugin>=4'")


def test_writes_the_four_files_and_nothing_else(tmp_path: Path) -> None:
    written = write(tmp_path)
    folder = tmp_path / "7"
    assert written.folder == folder
    assert sorted(p.name for p in folder.iterdir()) == sorted(record_file_names("7", ["h5", "pkl"]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["7"]  # no staging folder left
    assert written.bytes == sum(p.stat().st_size for p in folder.iterdir())


def test_formats_select_the_image_files_and_the_pickle_is_opt_in(tmp_path: Path) -> None:
    write_record(tmp_path, "7", IMAGES, METADATA)
    assert sorted(p.name for p in (tmp_path / "7").iterdir()) == ["images_7.h5", "metadata_7.json",
                                                                   "metadata_7.pkl"]
    write(tmp_path / "pkl", formats=["pkl"])
    assert sorted(p.name for p in (tmp_path / "pkl" / "7").iterdir()) == ["images_7.pkl", "metadata_7.json",
                                                                          "metadata_7.pkl"]


@pytest.mark.parametrize("compression", ["gzip-2", "gzip-4", "lzf", "zstd-3"])
def test_rewrite_is_byte_identical(tmp_path: Path, compression: str) -> None:
    if compression.startswith("zstd"):
        hdf5plugin_or_skip()
    write(tmp_path / "one", h5_compression=compression)
    write(tmp_path / "two", h5_compression=compression)
    write(tmp_path / "two", h5_compression=compression)  # over an existing record folder
    for name in record_file_names("7", ["h5", "pkl"]):
        assert (tmp_path / "one" / "7" / name).read_bytes() == (tmp_path / "two" / "7" / name).read_bytes(), name
    with h5py.File(tmp_path / "one" / "7" / "images_7.h5") as h5:
        assert h5.attrs["compression"] == compression


def test_h5_layout_has_a_dataset_per_dtype_and_each_file_the_narrowest(tmp_path: Path) -> None:
    write(tmp_path)
    with h5py.File(tmp_path / "7" / "images_7.h5") as h5:
        datasets: list[str] = []
        h5.visititems(lambda name, obj: datasets.append(name) if isinstance(obj, h5py.Dataset) else None)
        assert sorted(datasets) == ["files/content", "files/content_offset", "files/itemsize", "files/offset",
                                    "files/path", "files/sha256", "files/start",
                                    "segments_uint16", "segments_uint32", "segments_uint8"]
        assert h5.attrs["record_id"] == "7" and h5.attrs["format_version"] == 3
        paths = list(h5["files/path"].asstr()[()])
        assert paths == sorted(IMAGES) == ["top/a.txt", "top/b.py", "top/emoji.md", "top/empty.txt"]
        # the en dash of a.txt needs 16 bits, the emoji 32; b.py stays in 8 bits whatever its neighbours hold
        assert list(h5["files/itemsize"][()]) == [2, 1, 4, 1]
        assert [h5[f"segments_uint{8 * k}"].dtype.itemsize for k in (1, 2, 4)] == [1, 2, 4]
        assert h5["segments_uint8"].shape == (2, 80, 80) and h5["segments_uint32"].shape == (1, 80, 80)
        assert h5["segments_uint8"].compression == "gzip" and h5["segments_uint8"].compression_opts == 2
        assert h5["segments_uint16"].shuffle and not h5["segments_uint8"].shuffle
        offsets, starts, itemsizes = h5["files/offset"][()], h5["files/start"][()], h5["files/itemsize"][()]
        assert list(offsets) == [0, 1, 3, 4, 4]
        for i, path in enumerate(paths):
            count = int(offsets[i + 1] - offsets[i])
            stored = h5[f"segments_uint{8 * itemsizes[i]}"][starts[i]:starts[i] + count]
            np.testing.assert_array_equal(stored, IMAGES[path])


def test_h5_stores_each_file_s_text_with_its_sha256_and_the_images_compression(tmp_path: Path) -> None:
    write(tmp_path, h5_compression="lzf")
    with h5py.File(tmp_path / "7" / "images_7.h5") as h5:
        paths = list(h5["files/path"].asstr()[()])
        offsets, content = h5["files/content_offset"][()], h5["files/content"]
        assert content.dtype == np.uint8 and content.compression == "lzf" and offsets.dtype == np.uint64
        assert [content[offsets[i]:offsets[i + 1]].tobytes() for i in range(len(paths))] == [TEXTS[p] for p in paths]
        assert [bytes(d).hex() for d in h5["files/sha256"][()]] == [hashlib.sha256(TEXTS[p]).hexdigest()
                                                                   for p in paths]


def test_without_texts_the_h5_is_format_2_and_texts_must_name_the_images(tmp_path: Path) -> None:
    write(tmp_path, texts=None)
    with h5py.File(tmp_path / "7" / "images_7.h5") as h5:
        assert h5.attrs["format_version"] == 2 and "content" not in h5["files"] and "sha256" not in h5["files"]
    with pytest.raises(ValueError, match="texts and images name different files"):
        write(tmp_path / "other", texts={**TEXTS, "top/extra.py": b""})
    assert not (tmp_path / "other").exists()


def test_one_emoji_does_not_widen_the_rest_of_its_record(tmp_path: Path) -> None:
    code = rasterize(b"x = 1\n" * 500)
    write_record(tmp_path / "plain", "8", {"a.py": code}, METADATA)
    write_record(tmp_path / "emoji", "8", {"a.py": code, "b.md": rasterize("\U0001F600\n".encode())}, METADATA)
    with h5py.File(tmp_path / "emoji" / "8" / "images_8.h5") as h5:
        assert h5["segments_uint8"].shape[0] == code.shape[0] and h5["segments_uint32"].shape[0] == 1
    plain = (tmp_path / "plain" / "8" / "images_8.h5").stat().st_size
    # format 1 stored all 7 images as uint32; now only the emoji's is, for a few hundred bytes more
    assert (tmp_path / "emoji" / "8" / "images_8.h5").stat().st_size < plain + 1024


def test_ascii_record_is_stored_in_one_byte_per_pixel(tmp_path: Path) -> None:
    write_record(tmp_path, "8", {"a.py": rasterize(b"x = 1\n")}, METADATA)
    with h5py.File(tmp_path / "8" / "images_8.h5") as h5:
        assert [name for name in h5 if name.startswith("segments")] == ["segments_uint8"]


def test_compression_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert h5_filter("gzip-1") == {"compression": "gzip", "compression_opts": 1}
    assert h5_filter("lzf") == {"compression": "lzf"}
    for bad in ["gzip-0", "gzip-10", "gzip", "zstd-23", "bz2"]:
        with pytest.raises(UserError, match="expected gzip-1 ... gzip-9, lzf or zstd-1 ... zstd-22"):
            h5_filter(bad)
    monkeypatch.setitem(sys.modules, "hdf5plugin", None)  # as if not installed
    with pytest.raises(UserError, match=r"zstd-3 needs hdf5plugin: python -m pip install 'hdf5plugin>=4'"):
        write(tmp_path, h5_compression="zstd-3")
    assert list(tmp_path.iterdir()) == []


def test_zstd_needs_hdf5plugin_in_the_reader_and_says_so(tmp_path: Path) -> None:
    hdf5plugin_or_skip()
    write(tmp_path, h5_compression="zstd-3")
    h5_file = tmp_path / "7" / "images_7.h5"
    with h5py.File(h5_file) as h5:
        assert h5["segments_uint8"].id.get_create_plist().get_filter(0)[0] == 32015  # zstd
    # a reader without hdf5plugin: a fresh interpreter where importing it fails
    code = ("import sys; sys.modules['hdf5plugin'] = None\n"
            "from zenodo_hpc.dataset.load import load_images\n"
            "try:\n    load_images(sys.argv[1])\nexcept Exception as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code, str(h5_file)], capture_output=True, text=True, timeout=120)
    assert "needs hdf5plugin: python -m pip install 'hdf5plugin>=4'" in out.stdout, out.stdout + out.stderr
    from zenodo_hpc.dataset.load import load_images

    np.testing.assert_array_equal(load_images(h5_file)["top/emoji.md"], IMAGES["top/emoji.md"])


def _globals_of(data: bytes) -> set[str]:
    """The globals a pickle names (GLOBAL, or STACK_GLOBAL after two strings)."""
    names, strings = set(), []
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "STACK_GLOBAL":
            names.add(f"{strings[-2]}.{strings[-1]}")
        elif op.name == "GLOBAL":
            names.add(arg.replace(" ", "."))
    return names


def test_the_pickle_has_the_2018_shapes_in_int32_through_numpy_ndarray_only(tmp_path: Path) -> None:
    write(tmp_path)
    data = (tmp_path / "7" / "images_7.pkl").read_bytes()
    assert _globals_of(data) == {"numpy.ndarray", "builtins.bytearray"}  # no numpy._core: numpy 1 loads it
    legacy = pickle.loads(data)
    assert type(legacy) is dict and sorted(legacy) == sorted(IMAGES)
    assert legacy["top/empty.txt"] == []
    assert len(legacy["top/b.py"]) == 2
    for key, segments in legacy.items():
        for i, seg in enumerate(segments):
            assert type(seg) is np.ndarray and seg.shape == (80, 80) and seg.dtype == np.dtype("<i4")
            assert seg.flags.writeable and seg.flags.c_contiguous and seg.flags.aligned  # as OpenCV wants it
            np.testing.assert_array_equal(seg, IMAGES[key][i])
    seg[0, 0] = 65  # writable: e.g. cv2.rectangle(seg, ...) draws into it
    assert pickle.loads((tmp_path / "7" / "metadata_7.pkl").read_bytes()) == METADATA
    assert json.loads((tmp_path / "7" / "metadata_7.json").read_text()) == METADATA


NUMPY1_CHECK = """
import json, pickle, sys
import numpy
legacy = pickle.load(open(sys.argv[1], "rb"))
print(json.dumps({"numpy": numpy.__version__,
                  "files": {k: [[str(s.dtype), list(s.shape), bool(s.flags.writeable), int(s.sum())] for s in v]
                            for k, v in legacy.items()}}))
"""


@pytest.mark.registry
def test_the_pickle_loads_under_numpy_1(tmp_path: Path) -> None:
    """A throwaway venv with numpy<2 from the registry (pip's own cache is used; nothing in the work tree)."""
    write(tmp_path / "data")
    python = throwaway_venv(tmp_path / "venv")
    install(python, "numpy<2")
    run = subprocess.run([str(python), "-c", NUMPY1_CHECK, str(tmp_path / "data" / "7" / "images_7.pkl")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    loaded = json.loads(run.stdout)
    assert loaded["numpy"].startswith("1.")
    assert loaded["files"] == {key: [["int32", [80, 80], True, int(seg.astype(np.int64).sum())] for seg in images]
                               for key, images in IMAGES.items()}


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
