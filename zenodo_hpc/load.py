"""Read records back: ``load_images`` and ``load_metadata`` (SPEC section 5).

Both accept a record folder or one of its files. Images always come back as ``uint32`` arrays of shape
``(n, height, width)``, whatever the file stores, so they compare equal to :func:`zenodo_hpc.raster.rasterize`.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .errors import UserError
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
    """``{file path: (n, height, width) uint32 array}`` from an ``images_<id>.h5``/``.pkl`` or a record folder."""
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
    except OSError as exc:
        raise UserError(f"{file}: cannot read HDF5 file ({exc})") from None
    return {str(p): segments[offsets[i]:offsets[i + 1]] for i, p in enumerate(paths)}


def read_images_pkl(file: Path) -> dict[str, np.ndarray]:
    legacy = _unpickle(file)
    if not isinstance(legacy, dict):
        raise UserError(f"{file}: expected a dict of file path -> list of arrays")
    out = {}
    for key, segs in legacy.items():
        arrays = [np.asarray(s, dtype=np.uint32) for s in segs]
        out[key] = np.stack(arrays) if arrays else np.empty((0, 80, 80), dtype=np.uint32)
    return out


def load_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The record's metadata dict from ``metadata_<id>.json``/``.pkl`` or a record folder."""
    file = _record_file(Path(path), "metadata", (".json", ".pkl"))
    if file.suffix == ".json":
        try:
            return json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"{file}: cannot read metadata JSON ({exc})") from None
    if file.suffix == ".pkl":
        meta = _unpickle(file)
        if not isinstance(meta, dict):
            raise UserError(f"{file}: expected a metadata dict")
        return meta
    raise UserError(f"{file}: not a metadata file (expected metadata_<id>.json or metadata_<id>.pkl)")


def _unpickle(file: Path) -> Any:
    try:
        with open(file, "rb") as handle:
            return pickle.load(handle)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
        raise UserError(f"{file}: cannot read pickle ({exc})") from None
