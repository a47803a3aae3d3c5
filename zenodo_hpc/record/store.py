"""Write one record folder (docs/formats.md): images and text as HDF5 (and the 2018 pickle), metadata as pickle
and JSON.

Everything is written into a hidden staging folder beside the record folder and moved into place only
when complete, so a reader (or ``pack``) never sees half a record. Output is byte-identical when the
same input is written again: no timestamps, sorted paths, fixed pickle protocol, fixed filters.

HDF5 layout, format_version 3 (docs/formats.md; versions 1 and 2 are still read by zenodo_hpc.load):

    /segments_uint8    (N8, height, width)  images of the files whose code points all fit in uint8
    /segments_uint16   (N16, height, width) ... in uint16 (the Basic Multilingual Plane)
    /segments_uint32   (N32, height, width) ... of the files with a code point above U+FFFF
                       each present only when it holds images; chunks of 64 images, output.h5_compression,
                       shuffle for uint16/uint32; images file after file in sorted path order
    /files/path        (F,) UTF-8 strings: every rasterized file, sorted (files with 0 segments included)
    /files/offset      (F + 1,) uint64: file i has offset[i + 1] - offset[i] images, numbered over the record
    /files/itemsize    (F,) uint8: 1, 2 or 4, the dataset holding file i's images (segments_uint{8 * itemsize})
    /files/start       (F,) uint64: index of file i's first image in that dataset
    /files/content     (C,) uint8: the published (masked) bytes of every rasterized file, file after file;
                       chunks of CONTENT_CHUNK bytes, output.h5_compression
    /files/content_offset (F + 1,) uint64: file i's bytes are content[content_offset[i]:content_offset[i + 1]]
    /files/sha256      (F, 32) uint8: the sha256 digest of those bytes (the tree's sha256 of the file)
    attributes         format, format_version, record_id, compression, width, height, pad, tab_width

The dtype is chosen per file, so that one emoji does not widen every image of its record to 32 bits.
Format 2 is format 3 without the three ``content``/``sha256`` datasets: written only when no text is given
(``texts=None``), as records processed before the text was stored were.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..core.config import DEFAULT_H5_COMPRESSION
from ..core.errors import UserError
from .raster import narrowest_uint

H5_FORMAT = "zenodo-hpc-images"
H5_FORMAT_VERSION = 3  # 3: with each file's text; 2: images only (written when no text is given)
H5_IMAGES_ONLY_VERSION = 2
PICKLE_PROTOCOL = 4  # readable by every Python 3 the 2018 tutorial ran on
CHUNK_SEGMENTS = 64
# Text is chunked by bytes: 256 KiB chunks compress within 1% of 1 MiB ones with gzip (its window is 32 KiB), 4%
# with zstd-3, 2-7% better than 64 KiB (benchmarks/RESULTS.md, bench_text.py), and bound what reading one file
# decompresses.
CONTENT_CHUNK = 1 << 18
SHA256_BYTES = 32
PICKLE_DTYPE = "<i4"  # the pickle's arrays: signed like 2018's int64, half its size, a type OpenCV writes
# HDF5 1.10's file format (every h5py 3 reads it): its chunk indexes cost a few bytes where 1.8's B-tree
# costs about 5 KB per compressed dataset, which would make a dataset per dtype expensive for small records.
H5_LIBVER = ("v110", "v110")
ZSTD_FILTER = 32015  # the HDF5 filter id of zstd (registered by hdf5plugin)
HDF5PLUGIN_HINT = "python -m pip install 'hdf5plugin>=4'"  # the hdf5plugin extra (PyPI has it, not zenodo-hpc)
STAGING_PREFIX = "."  # staging folders are hidden: ".<id>.partial-<random>"


_RECORD_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


def check_record_id(record_id: str) -> str:
    """Record ids name folders and files: letters, digits, ``.``, ``_``, ``-`` (Zenodo's are integers)."""
    if not _RECORD_ID.fullmatch(str(record_id)):
        raise UserError(f"bad record id {record_id!r}: use letters, digits, '.', '_' or '-' (at most 128)")
    return str(record_id)


def images_h5_name(record_id: str) -> str:
    return f"images_{record_id}.h5"


def images_pkl_name(record_id: str) -> str:
    return f"images_{record_id}.pkl"


def metadata_pkl_name(record_id: str) -> str:
    return f"metadata_{record_id}.pkl"


def metadata_json_name(record_id: str) -> str:
    return f"metadata_{record_id}.json"


def record_file_names(record_id: str, formats: list[str] | tuple[str, ...]) -> list[str]:
    """The files a complete record folder holds for these ``output.formats``."""
    names = []
    if "h5" in formats:
        names.append(images_h5_name(record_id))
    if "pkl" in formats:
        names.append(images_pkl_name(record_id))
    names += [metadata_pkl_name(record_id), metadata_json_name(record_id)]
    return names


@dataclass
class WrittenRecord:
    folder: Path
    files: list[str]
    bytes: int


def write_record(
    data_dir: Path,
    record_id: str,
    images: Mapping[str, np.ndarray],
    metadata: dict[str, Any],
    *,
    formats: list[str] | tuple[str, ...] = ("h5",),
    raster_attrs: Mapping[str, int] | None = None,
    h5_compression: str = DEFAULT_H5_COMPRESSION,
    texts: Mapping[str, bytes] | None = None,
) -> WrittenRecord:
    """Write ``<data_dir>/<record_id>/`` atomically and return what was written.

    ``images`` maps each rasterized file's key to its ``(n, height, width)`` array (n may be 0);
    ``h5_compression`` is an ``output.h5_compression`` value (``gzip-2``, ``lzf``, ``zstd-3``, ...);
    ``texts`` maps the same keys to the bytes the images were made from (credentials masked): given, the h5
    is format 3 and holds them; ``None`` writes format 2 (images only). The pickle never holds text (2018's layout).
    """
    check_record_id(record_id)
    data_dir = Path(data_dir)
    if texts is not None and set(texts) != set(images):
        raise ValueError(f"record {record_id}: texts and images name different files")
    filters = h5_filter(h5_compression) if "h5" in formats else {}  # a missing hdf5plugin fails before any write
    try:
        return _write_record(data_dir, record_id, images, metadata, formats, raster_attrs or {}, filters, texts)
    except OSError as exc:
        what = exc.strerror or str(exc)
        raise UserError(f"cannot write record {record_id} in {data_dir}: {what}") from exc


def _write_record(
    data_dir: Path,
    record_id: str,
    images: Mapping[str, np.ndarray],
    metadata: dict[str, Any],
    formats: list[str] | tuple[str, ...],
    raster_attrs: Mapping[str, int],
    filters: dict[str, Any],
    texts: Mapping[str, bytes] | None,
) -> WrittenRecord:
    data_dir.mkdir(parents=True, exist_ok=True)
    folder = data_dir / record_id
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{record_id}.partial-", dir=data_dir))
    try:
        keys = sorted(images)
        if "h5" in formats:
            write_images_h5(staging / images_h5_name(record_id), record_id, keys, images, raster_attrs, filters,
                            texts=texts)
        if "pkl" in formats:
            write_images_pkl(staging / images_pkl_name(record_id), keys, images)
        (staging / metadata_pkl_name(record_id)).write_bytes(pickle.dumps(metadata, protocol=PICKLE_PROTOCOL))
        (staging / metadata_json_name(record_id)).write_text(metadata_to_json(metadata), encoding="utf-8")
        names = record_file_names(record_id, formats)
        size = sum((staging / name).stat().st_size for name in names)
        _move_into_place(staging, folder, names)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return WrittenRecord(folder=folder, files=names, bytes=size)


def _move_into_place(staging: Path, folder: Path, names: list[str]) -> None:
    """Publish the staged files: rename the whole folder, or replace file by file when it exists."""
    os.chmod(staging, 0o755)
    try:
        os.rename(staging, folder)
        return
    except OSError:
        if not folder.is_dir():
            raise
    for name in names:
        os.replace(staging / name, folder / name)


def metadata_to_json(metadata: dict[str, Any]) -> str:
    """One line of compact JSON: with an indent Python's JSON writer runs in pure Python, 5x slower on the
    large trees of big records (``python -m json.tool`` shows it indented)."""
    return json.dumps(metadata, ensure_ascii=False, allow_nan=False, separators=(",", ":")) + "\n"


def _narrowest_itemsize(array: np.ndarray) -> int:
    """Bytes per pixel of the narrowest type holding a file's images (a uint8 array needs no look)."""
    if array.dtype.itemsize == 1 or not array.size:
        return 1
    return np.dtype(narrowest_uint(int(array.max()))).itemsize


def segments_dataset_name(itemsize: int) -> str:
    """``1`` -> ``segments_uint8``: the dataset of a format 2 file holding images of this many bytes a pixel."""
    return f"segments_uint{8 * int(itemsize)}"


def h5_filter(compression: str) -> dict[str, Any]:
    """``create_dataset`` keywords of an ``output.h5_compression`` value; zstd needs hdf5plugin (an extra)."""
    name, _, level = compression.partition("-")
    if name == "gzip" and level.isdigit() and 1 <= int(level) <= 9:
        return {"compression": "gzip", "compression_opts": int(level)}
    if compression == "lzf":
        return {"compression": "lzf"}
    if name == "zstd" and level.isdigit() and 1 <= int(level) <= 22:
        try:
            import hdf5plugin
        except ImportError:
            raise UserError(f"output.h5_compression {compression} needs hdf5plugin: {HDF5PLUGIN_HINT} "
                            "(every reader of the files needs it too)") from None
        return dict(hdf5plugin.Zstd(clevel=int(level)))
    raise UserError(f"output.h5_compression {compression!r}: expected gzip-1 ... gzip-9, lzf or zstd-1 ... zstd-22")


def write_images_h5(
    path: Path,
    record_id: str,
    keys: list[str],
    images: Mapping[str, np.ndarray],
    raster_attrs: Mapping[str, int],
    filters: dict[str, Any] | None = None,
    *,
    texts: Mapping[str, bytes] | None = None,
) -> None:
    """Format 3: per file the narrowest dtype; one chunked, compressed dataset per dtype; paths and offsets; each
    file's text with its sha256. Without ``texts``, format 2 (the same without the text)."""
    filters = h5_filter(DEFAULT_H5_COMPRESSION) if filters is None else filters
    shapes = [images[k].shape for k in keys if images[k].shape[0]]
    height = int(raster_attrs.get("height", shapes[0][1] if shapes else 80))
    width = int(raster_attrs.get("width", shapes[0][2] if shapes else 80))
    counts = np.array([images[k].shape[0] for k in keys], dtype=np.uint64)
    offsets = np.zeros(len(keys) + 1, dtype=np.uint64)
    np.cumsum(counts, out=offsets[1:])
    itemsizes = np.ones(len(keys), dtype=np.uint8)
    starts = np.zeros(len(keys), dtype=np.uint64)
    groups: dict[int, list[np.ndarray]] = {}
    filled: dict[int, int] = {}
    for i, key in enumerate(keys):
        array = images[key]
        itemsize = _narrowest_itemsize(array)
        itemsizes[i] = itemsize
        starts[i] = filled.get(itemsize, 0)
        if array.shape[0]:
            groups.setdefault(itemsize, []).append(array)
            filled[itemsize] = filled.get(itemsize, 0) + array.shape[0]

    # Built in memory, then written with one plain write: a full disk or a quota is then an OSError like any
    # other, where HDF5 writing to the disk itself fails inside its own teardown (and can even crash).
    buffer = io.BytesIO()
    with h5py.File(buffer, "w", libver=H5_LIBVER, track_order=False) as h5:
        h5.attrs["format"] = H5_FORMAT
        h5.attrs["format_version"] = H5_IMAGES_ONLY_VERSION if texts is None else H5_FORMAT_VERSION
        h5.attrs["record_id"] = str(record_id)
        h5.attrs["compression"] = _filter_label(filters)
        for name in ("width", "height", "pad", "tab_width"):
            if name in raster_attrs:
                h5.attrs[name] = int(raster_attrs[name])
        for itemsize in sorted(groups):
            dtype = np.dtype(f"<u{itemsize}")
            segments = np.concatenate(groups[itemsize], dtype=dtype, casting="unsafe")  # values checked to fit
            h5.create_dataset(
                segments_dataset_name(itemsize),
                data=segments,
                maxshape=(None, height, width),
                chunks=(max(1, min(CHUNK_SEGMENTS, segments.shape[0])), height, width),
                shuffle=itemsize > 1,
                track_times=False,
                **filters,
            )
        files = h5.create_group("files", track_order=False)
        files.create_dataset("path", data=np.array(keys, dtype=object), dtype=h5py.string_dtype("utf-8"),
                             track_times=False)
        files.create_dataset("offset", data=offsets, track_times=False)
        files.create_dataset("itemsize", data=itemsizes, track_times=False)
        files.create_dataset("start", data=starts, track_times=False)
        if texts is not None:
            write_texts(files, [texts[k] for k in keys], filters)
    with open(path, "wb") as handle:
        handle.write(buffer.getbuffer())


def write_texts(files: h5py.Group, texts: list[bytes], filters: dict[str, Any]) -> None:
    """``/files/content`` (every file's bytes, one after the other: a dataset of variable-length strings would
    not be compressed, HDF5 filters apply to fixed-size elements only), ``content_offset`` and ``sha256``."""
    offsets = np.zeros(len(texts) + 1, dtype=np.uint64)
    np.cumsum([len(t) for t in texts], out=offsets[1:])
    content = np.frombuffer(b"".join(texts), dtype=np.uint8)
    digests = np.frombuffer(b"".join(hashlib.sha256(t).digest() for t in texts), dtype=np.uint8)
    files.create_dataset("content", data=content, maxshape=(None,),
                         chunks=(max(1, min(CONTENT_CHUNK, content.size)),), track_times=False, **filters)
    files.create_dataset("content_offset", data=offsets, track_times=False)
    files.create_dataset("sha256", data=digests.reshape(len(texts), SHA256_BYTES), track_times=False)


def _filter_label(filters: dict[str, Any]) -> str:
    """The ``compression`` attribute: ``gzip-2``, ``lzf`` or ``zstd-3``, for people looking at a file."""
    kind = filters.get("compression")
    if kind == "gzip":
        return f"gzip-{filters['compression_opts']}"
    if kind == ZSTD_FILTER:
        return f"zstd-{filters['compression_opts'][0]}"
    return str(kind)


class _LegacyPickler(pickle.Pickler):
    """Pickles numpy arrays as ``numpy.ndarray(shape, "<i4", bytearray(data))``.

    numpy's own reduction names ``numpy.core.multiarray._reconstruct`` (numpy 1) or
    ``numpy._core.multiarray._reconstruct`` (numpy 2), so a pickle written under numpy 2 fails to load
    under numpy 1 (``No module named 'numpy._core'``). ``numpy.ndarray`` and ``builtins.bytearray`` exist
    under both, and an array made over a bytearray is writable (over bytes it would be read-only).
    """

    def __init__(self, file: Any) -> None:
        super().__init__(file, protocol=PICKLE_PROTOCOL)
        self._shapes: dict[tuple[int, ...], tuple[int, ...]] = {}  # one tuple per shape: pickled once, then memo

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is not np.ndarray:
            return NotImplemented
        array = np.ascontiguousarray(obj, dtype=PICKLE_DTYPE)
        shape = tuple(int(n) for n in array.shape)
        shape = self._shapes.setdefault(shape, shape)
        return np.ndarray, (shape, PICKLE_DTYPE, bytearray(array.tobytes()))


def write_images_pkl(path: Path, keys: list[str], images: Mapping[str, np.ndarray]) -> None:
    """The 2018 layout: ``{path: [array(80, 80), ...]}`` of int32 code points, loadable under numpy 1 and 2."""
    legacy = {key: list(images[key]) for key in keys}
    with open(path, "wb") as handle:
        _LegacyPickler(handle).dump(legacy)
