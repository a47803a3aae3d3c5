"""Read records back: ``load_images``, ``load_files`` (each file's text) and ``load_metadata`` (docs/formats.md).

Both accept a record folder or one of its files, written by zenodo-hpc or by the 2018 code that made the
published Zenodo-ML dataset (docs/from-2018.md). Images always come back as ``uint32`` arrays of shape
``(n, height, width)``, whatever the file stores, so they compare equal to :func:`zenodo_hpc.raster.rasterize`.

Every pickle (ours and 2018's) is read by :class:`SafeUnpickler`, which builds numpy arrays, plain Python
values and containertree trees and refuses anything else: unpickling a downloaded file cannot run code.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import UserError
from .decode import (
    NoStoredText,
    h5_has_text,
    metadata_from_json,
    metadata_from_pickle,
    read_file,
    read_images_h5,
    read_images_pkl,
    read_texts_h5,
)
from .image import load_files_from_image, load_images_from_image, load_metadata_from_image, split_image_path


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

    A record folder is read from its ``.h5`` when it has one, else from its ``.pkl``. A path inside a
    squashfs image (``zenodo-ml.sqsh:1065022/images_1065022.h5``, or the record folder
    ``zenodo-ml.sqsh:1065022``) is read without mounting it (docs/image.md).

    Files of the published 2018 dataset are read too: its h5 (one int64 dataset per image, named
    ``<path>__<i>``) and its pickle. There the last image of a file is shorter than 80 rows; it is padded
    with rows of spaces (32) to 80 x 80, as the rasterization rules pad it, and an image of no rows at
    all (2018's empty files) is left out, as an empty file has no image (docs/from-2018.md).
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


def load_files(path: str | os.PathLike[str]) -> dict[str, bytes]:
    """``{file path: its bytes}`` of every rasterized file of a record, from its ``images_<id>.h5``, its folder, or
    either inside a squashfs image (``zenodo-ml.sqsh:1065022``): the bytes published, credentials masked (their
    sha256 is the tree's). Each is checked against its sha256.

    Only format 3 files hold the text: a record processed before (format 1 or 2), a 2018 file or a folder with only
    the pickle raises :class:`~zenodo_hpc.dataset.decode.NoStoredText` (a ``UserError``) saying so.
    """
    inside = split_image_path(path)
    if inside is not None:
        return load_files_from_image(*inside)
    file = _record_file(Path(path), "images", (".h5", ".pkl"))
    if file.suffix != ".h5":
        raise NoStoredText(f"{file}: holds no text (only images_<id>.h5 of format_version 3 does; the pickle keeps "
                           "2018's layout)")
    return read_texts_h5(file)


def records_without_text(folders: Iterable[Path]) -> list[str]:
    """The ids (folder names) of the record folders whose files hold no text: no ``images_<id>.h5``, or one of format
    1 or 2. An export lists them and stops rather than leave their files out silently (docs/formats.md)."""
    missing = []
    for folder in folders:
        h5_file = folder / f"images_{folder.name}.h5"
        if not h5_file.is_file() or not h5_has_text(h5_file):
            missing.append(folder.name)
    return missing


def load_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The record's metadata dict from ``metadata_<id>.json``/``.pkl``, a record folder, or inside an image.

    A 2018 ``metadata_<id>.pkl`` (``{"hit": ..., "tree": <containertree.ContainerTree>}``) is read without
    containertree: its tree comes back as the nested dicts of today's (``{"type": "dir", "children": {...}}``,
    files ``{"type": "file", "size": ...}``).
    """
    inside = split_image_path(path)
    if inside is not None:
        return load_metadata_from_image(*inside)
    file = _record_file(Path(path), "metadata", (".json", ".pkl"))
    if file.suffix == ".json":
        return metadata_from_json(read_file(file), str(file))
    if file.suffix == ".pkl":
        return metadata_from_pickle(read_file(file), str(file))
    raise UserError(f"{file}: not a metadata file (expected metadata_<id>.json or metadata_<id>.pkl)")
