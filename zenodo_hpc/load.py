"""Read records back: ``load_images`` and ``load_metadata`` (SPEC section 5).

Both accept a record folder or one of its files. Images always come back as ``uint32`` arrays of shape
``(n, height, width)``, whatever the file stores, so they compare equal to :func:`zenodo_hpc.raster.rasterize`.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .errors import UserError
from .image import load_images_from_image, load_metadata_from_image, split_image_path
from .store import H5_FORMAT


def _record_file(path: Path, prefix: str, suffixes: tuple[str, ...]) -> Path:
    """In a record folder, the ``<prefix>_<id><suffix>`` file, trying ``suffixes`` in order."""
    if not path.exists():
        raise UserError(f"{path} does not exist")
    if not path.is_dir():
        return path
    for suffix in suffixes:
        candidate = path / f"{prefix}_{path.name}{suffix}"
        if candidate.is_file():
            return candidate
    wanted = " or ".join(f"{prefix}_{path.name}{s}" for s in suffixes)
    raise UserError(f"{path} is not a record folder: it has no {wanted}")


def load_images(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """``{file path: (n, height, width) uint32 array}`` from an ``images_<id>.h5``/``.pkl`` or a record folder.

    A path inside a squashfs image (``zenodo-ml.sqsh:1065022/images_1065022.h5``, or the record folder
    ``zenodo-ml.sqsh:1065022``) is read without mounting it (docs/image.md).
    """
    inside = split_image_path(path)
    if inside is not None:
        return load_images_from_image(*inside)
    file = _record_file(Path(path), "images", (".h5", ".pkl"))
    if file.suffix == ".h5":
        return read_images_h5(file)
    if file.suffix == ".pkl":
        return read_images_pkl(file)
    raise UserError(f"{file}: not an images file (expected images_<id>.h5 or images_<id>.pkl)")


def read_images_h5(file: Path) -> dict[str, np.ndarray]:
    try:
        with h5py.File(file, "r") as h5:
            if h5.attrs.get("format") != H5_FORMAT:
                raise UserError(f"{file}: not a zenodo-hpc images file (no format={H5_FORMAT} attribute)")
            segments = h5["segments"][()].astype(np.uint32, copy=False)
            paths = h5["files/path"].asstr()[()]
            offsets = h5["files/offset"][()].astype(np.int64)
    except (OSError, KeyError, ValueError) as exc:  # a damaged file raises any of them from h5py
        raise UserError(f"{file}: cannot read HDF5 file ({exc})") from None
    return {str(p): segments[offsets[i]:offsets[i + 1]] for i, p in enumerate(paths)}


def read_images_pkl(file: Path) -> dict[str, np.ndarray]:
    return images_from_pickle(_read(file), str(file))


def load_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The record's metadata dict from ``metadata_<id>.json``/``.pkl``, a record folder, or inside an image."""
    inside = split_image_path(path)
    if inside is not None:
        return load_metadata_from_image(*inside)
    file = _record_file(Path(path), "metadata", (".json", ".pkl"))
    if file.suffix == ".json":
        return metadata_from_json(_read(file), str(file))
    if file.suffix == ".pkl":
        return metadata_from_pickle(_read(file), str(file))
    raise UserError(f"{file}: not a metadata file (expected metadata_<id>.json or metadata_<id>.pkl)")


def _read(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as exc:
        raise UserError(f"{file}: cannot read it ({exc.strerror or exc})") from None


# --- decoding a record's files from bytes (also used for files read out of an image) ------------------


def images_from_pickle(data: bytes, name: str) -> dict[str, np.ndarray]:
    """The 2018 pickle ``{path: [array(80, 80), ...]}`` as ``{path: (n, 80, 80) uint32}`` (as load.py)."""
    legacy = _unpickle(data, name)
    if not isinstance(legacy, dict):
        raise UserError(f"{name}: expected a dict of file path -> list of arrays")
    out = {}
    try:
        for key, segs in legacy.items():
            arrays = [np.asarray(s, dtype=np.uint32) for s in segs]
            out[key] = np.stack(arrays) if arrays else np.empty((0, 80, 80), dtype=np.uint32)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{name}: expected a dict of file path -> list of (80, 80) arrays ({_why(exc)})") from None
    return out


def metadata_from_json(data: bytes, name: str) -> dict[str, Any]:
    try:
        meta = json.loads(data.decode("utf-8"))
    except ValueError as exc:
        raise UserError(f"{name}: cannot read metadata JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{name}: expected a metadata dict")
    return meta


def metadata_from_pickle(data: bytes, name: str) -> dict[str, Any]:
    meta = _unpickle(data, name)
    if not isinstance(meta, dict):
        raise UserError(f"{name}: expected a metadata dict")
    return meta


def _unpickle(data: bytes, name: str) -> Any:
    """Unpickle a record's file. Like any pickle, only from an image you trust (the .h5/.json are preferred)."""
    try:
        return pickle.loads(data)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError, IndexError, KeyError,
            TypeError, struct.error, MemoryError, OverflowError) as exc:  # all seen from damaged pickles
        raise UserError(f"{name}: cannot read pickle ({exc})") from None


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
