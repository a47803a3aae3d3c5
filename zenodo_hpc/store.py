"""Write one record folder (SPEC section 5): images as HDF5 and 2018 pickle, metadata as pickle and JSON.

Everything is written into a hidden staging folder beside the record folder and moved into place only
when complete, so a reader (or ``pack``) never sees half a record. Output is byte-identical when the
same input is written again: no timestamps, sorted paths, fixed pickle protocol.

HDF5 layout (docs/formats.md):

    /segments      (N, height, width) uint8|uint16|uint32, gzip + shuffle, chunks of 64 segments
    /files/path    (F,) UTF-8 strings: every rasterized file, sorted (files with 0 segments included)
    /files/offset  (F + 1,) uint64: segments of file i are segments[offset[i]:offset[i + 1]]
    attributes     format, format_version, record_id, width, height, pad, tab_width
"""

from __future__ import annotations

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

from .errors import UserError

H5_FORMAT = "zenodo-hpc-images"
H5_FORMAT_VERSION = 1
PICKLE_PROTOCOL = 4  # readable by every Python 3 the 2018 tutorial ran on
CHUNK_SEGMENTS = 64
GZIP_LEVEL = 6  # level 9 is ~2% smaller and 4x slower on source code
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
    formats: list[str] | tuple[str, ...] = ("h5", "pkl"),
    raster_attrs: Mapping[str, int] | None = None,
) -> WrittenRecord:
    """Write ``<data_dir>/<record_id>/`` atomically and return what was written.

    ``images`` maps each rasterized file's key to its ``(n, height, width)`` array (n may be 0).
    """
    check_record_id(record_id)
    data_dir = Path(data_dir)
    try:
        return _write_record(data_dir, record_id, images, metadata, formats, raster_attrs or {})
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
) -> WrittenRecord:
    data_dir.mkdir(parents=True, exist_ok=True)
    folder = data_dir / record_id
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{record_id}.partial-", dir=data_dir))
    try:
        keys = sorted(images)
        if "h5" in formats:
            write_images_h5(staging / images_h5_name(record_id), record_id, keys, images, raster_attrs)
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
    return json.dumps(metadata, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def smallest_dtype(max_value: int) -> type[np.unsignedinteger]:
    """The narrowest unsigned type holding every code point of a record (ASCII code fits in uint8)."""
    for dtype in (np.uint8, np.uint16):
        if max_value <= np.iinfo(dtype).max:
            return dtype
    return np.uint32


def write_images_h5(
    path: Path,
    record_id: str,
    keys: list[str],
    images: Mapping[str, np.ndarray],
    raster_attrs: Mapping[str, int],
) -> None:
    """All segments in one chunked, compressed dataset; file paths and offsets beside it."""
    counts = np.array([images[k].shape[0] for k in keys], dtype=np.uint64)
    offsets = np.zeros(len(keys) + 1, dtype=np.uint64)
    np.cumsum(counts, out=offsets[1:])
    arrays = [images[k] for k in keys if images[k].shape[0]]
    height = int(raster_attrs.get("height", arrays[0].shape[1] if arrays else 80))
    width = int(raster_attrs.get("width", arrays[0].shape[2] if arrays else 80))
    max_value = max((int(a.max()) for a in arrays), default=0)
    dtype = smallest_dtype(max_value)
    segments = np.concatenate(arrays).astype(dtype) if arrays else np.empty((0, height, width), dtype)

    with h5py.File(path, "w", track_order=False) as h5:
        h5.attrs["format"] = H5_FORMAT
        h5.attrs["format_version"] = H5_FORMAT_VERSION
        h5.attrs["record_id"] = str(record_id)
        for name in ("width", "height", "pad", "tab_width"):
            if name in raster_attrs:
                h5.attrs[name] = int(raster_attrs[name])
        h5.create_dataset(
            "segments",
            data=segments,
            shape=segments.shape,
            maxshape=(None, height, width),
            chunks=(max(1, min(CHUNK_SEGMENTS, segments.shape[0])), height, width),
            compression="gzip",
            compression_opts=GZIP_LEVEL,
            shuffle=segments.dtype.itemsize > 1,
            track_times=False,
        )
        files = h5.create_group("files", track_order=False)
        files.create_dataset("path", data=np.array(keys, dtype=object), dtype=h5py.string_dtype("utf-8"),
                             track_times=False)
        files.create_dataset("offset", data=offsets, track_times=False)


def write_images_pkl(path: Path, keys: list[str], images: Mapping[str, np.ndarray]) -> None:
    """The 2018 layout: ``{path: [array(80, 80), ...]}``, uint32 code points (not int64 twice over)."""
    legacy = {key: [np.ascontiguousarray(seg, dtype=np.uint32) for seg in images[key]] for key in keys}
    with open(path, "wb") as handle:
        pickle.dump(legacy, handle, protocol=PICKLE_PROTOCOL)
