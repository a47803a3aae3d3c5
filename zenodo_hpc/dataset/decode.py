"""Decode a record's files from their bytes: the images h5 (format 1, 2 and 3, and 2018's layout) and the
text of format 3, the images pickle and the metadata JSON and pickle, ours and 2018's.

One decoding module for every reader: :mod:`zenodo_hpc.load` reads files from a folder, the image reader
(:mod:`zenodo_hpc.dataset.image`) reads them out of a squashfs image, and both hand the bytes here. Every pickle
is read by :class:`SafeUnpickler`, which builds numpy arrays, plain Python values and containertree trees
and refuses anything else: unpickling a downloaded file cannot run code.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import io
import json
import pickle
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import numpy as np

from ..core.errors import UserError
from ..record.store import H5_FORMAT, HDF5PLUGIN_HINT, SHA256_BYTES, segments_dataset_name

H5_READ_VERSIONS = (1, 2, 3)
H5_TEXT_VERSION = 3  # the first format_version holding each file's text
LEGACY_SIZE = 80  # the 2018 images: 80 x 80
LEGACY_PAD = 32  # and their padding: spaces
_OUR_PICKLE_DTYPES = (np.dtype("<i4"), np.dtype(np.uint32))  # today's pickles; uint32 before format 2
_LEGACY_NAME = re.compile(r"(?P<path>.+)__(?P<index>[0-9]+)", re.DOTALL)


def read_images_h5(file: Any) -> dict[str, np.ndarray]:
    """An ``images_<id>.h5`` of any format version, or a 2018 one; ``file`` is a path or a file object."""
    try:
        with h5py.File(file, "r") as h5:
            fmt = h5.attrs.get("format")
            if fmt is None and "format_version" not in h5.attrs:
                return _read_2018_h5(h5, file)
            if fmt != H5_FORMAT:
                raise UserError(f"{file}: not a zenodo-hpc images file (no format={H5_FORMAT} attribute)")
            version = _format_version(h5, file)
            if version == 1:
                return _read_h5_v1(h5)
            return _read_h5_v2(h5, file)  # format 3 is format 2 with the text added
    except (OSError, KeyError, ValueError, IndexError) as exc:  # a damaged file raises any of them from h5py
        raise UserError(f"{file}: cannot read HDF5 file ({exc})") from None


def _format_version(h5: h5py.File, file: Any) -> int:
    """Our ``format_version`` (1 when absent, as the first files had it); a newer one is refused, naming it."""
    version = int(h5.attrs.get("format_version", 1))
    if version not in H5_READ_VERSIONS:
        raise UserError(f"{file}: written by a newer zenodo-hpc (format_version {version}; this one reads "
                        f"{', '.join(map(str, H5_READ_VERSIONS[:-1]))} and {H5_READ_VERSIONS[-1]}): "
                        "upgrade zenodo-hpc")
    return version


class NoStoredText(UserError):
    """An images file without the files' text: 2018's, or format 1 or 2 (records processed before it was kept)."""


class StoredText(NamedTuple):
    """One rasterized file's published bytes (credentials masked) and their sha256, as format 3 stores them."""

    path: str
    content: bytes
    sha256: str  # hex, as the metadata's tree gives it


def iter_texts_h5(file: Any) -> Iterator[StoredText]:
    """Each file's text, in the h5's order (sorted paths), read one file at a time: memory holds one file's bytes
    and HDF5's chunk cache, whatever the record's size. Every index is checked before it is used and every
    file's bytes against their sha256: a damaged or hostile file is one :class:`UserError` line, never a wrong text.
    Files without text (2018's, format 1 and 2) raise :class:`NoStoredText`."""
    try:
        with h5py.File(file, "r") as h5:
            _check_holds_text(h5, file)
            yield from _texts(h5, file)
    except (OSError, KeyError, ValueError, IndexError, TypeError) as exc:  # damaged files raise any of them
        raise UserError(f"{file}: cannot read HDF5 file ({_why(exc)})") from None


def iter_files_h5(file: Any) -> Iterator[tuple[StoredText, np.ndarray]]:
    """Each file's text and its ``(n, height, width)`` uint32 images, one file at a time (the Parquet export's
    read): memory holds one file's bytes and images and HDF5's chunk cache, whatever the record's size. Checked as
    :func:`iter_texts_h5` and :func:`read_images_h5` check."""
    try:
        with h5py.File(file, "r") as h5:
            _check_holds_text(h5, file)
            images = _ImageIndex(h5, file)
            for i, text in enumerate(_texts(h5, file)):
                yield text, images.read(i)
    except (OSError, KeyError, ValueError, IndexError, TypeError) as exc:  # damaged files raise any of them
        raise UserError(f"{file}: cannot read HDF5 file ({_why(exc)})") from None


def _check_holds_text(h5: h5py.File, file: Any) -> None:
    if h5.attrs.get("format") != H5_FORMAT:
        raise NoStoredText(f"{file}: holds no text (not a zenodo-hpc images file of format_version "
                           f"{H5_TEXT_VERSION} or later: the 2018 dataset's files have only images)")
    version = _format_version(h5, file)
    if version < H5_TEXT_VERSION:
        raise NoStoredText(f"{file}: holds no text (format_version {version}: processed before zenodo-hpc "
                           "kept each file's text; process the record again to add it)")


def _texts(h5: h5py.File, file: Any) -> Iterator[StoredText]:
    paths, offsets, digests, content = _text_index(h5, file)
    for i, path in enumerate(paths):
        data = content[int(offsets[i]):int(offsets[i + 1])].tobytes()
        digest = hashlib.sha256(data).digest()
        if digest != digests[i].tobytes():
            raise UserError(f"{file}: damaged: the text of {path} does not match its sha256")
        yield StoredText(str(path), data, digest.hex())


class _ImageIndex:
    """Format 2 and 3's image index (``/files/{path,offset,itemsize,start}``), checked to agree once; :meth:`read`
    reads one file's images only (HDF5 decompresses the chunks they lie in)."""

    def __init__(self, h5: h5py.File, file: Any) -> None:
        self.file = file
        self.paths = h5["files/path"].asstr()[()]
        offsets = h5["files/offset"][()].astype(np.int64)
        self.itemsizes = h5["files/itemsize"][()].astype(np.int64)
        self.starts = h5["files/start"][()].astype(np.int64)
        self.counts = np.diff(offsets)
        if not (len(offsets) == len(self.paths) + 1 == len(self.itemsizes) + 1 == len(self.starts) + 1) \
                or (self.counts < 0).any():
            raise UserError(f"{file}: damaged: /files/path, offset, itemsize and start do not agree")
        self.shape = (int(h5.attrs.get("height", LEGACY_SIZE)), int(h5.attrs.get("width", LEGACY_SIZE)))
        self.datasets: dict[int, h5py.Dataset] = {}
        for itemsize in sorted({int(k) for k in self.itemsizes[self.counts > 0]}):
            name = segments_dataset_name(itemsize)
            if name not in h5:
                raise UserError(f"{file}: damaged: files are stored in /{name}, which is missing")
            _check_filters(h5[name], file)
            self.datasets[itemsize] = h5[name]

    def read(self, i: int, whole: dict[int, np.ndarray] | None = None) -> np.ndarray:
        """File ``i``'s images, from its dataset, or from ``whole`` (the datasets already read, by itemsize)."""
        count = int(self.counts[i])
        if count == 0:
            return np.empty((0, *self.shape), dtype=np.uint32)
        itemsize = int(self.itemsizes[i])
        segments = whole[itemsize] if whole is not None else self.datasets[itemsize]
        start = int(self.starts[i])
        if start < 0 or start + count > segments.shape[0]:
            raise UserError(f"{self.file}: damaged: {self.paths[i]} has images {start} to {start + count} of "
                            f"{segments.shape[0]} in /{segments_dataset_name(itemsize)}")
        return np.asarray(segments[start:start + count]).astype(np.uint32, copy=False)


def _text_index(h5: h5py.File, file: Any) -> tuple[Any, np.ndarray, np.ndarray, h5py.Dataset]:
    """``/files/path``, ``content_offset`` (as int64), ``sha256`` and the ``content`` dataset, checked to agree:
    offsets start at 0, never decrease, end at the content's length; one 32-byte digest per path."""
    paths = h5["files/path"].asstr()[()]
    content = h5["files/content"]
    offsets = h5["files/content_offset"][()]
    digests = h5["files/sha256"][()]
    if content.ndim != 1 or content.dtype != np.uint8 or offsets.ndim != 1 or offsets.dtype.kind not in "iu":
        raise UserError(f"{file}: damaged: /files/content is not a 1-D uint8 dataset with integer offsets")
    if offsets.dtype.kind == "u" and offsets.size and int(offsets.max()) > np.iinfo(np.int64).max:
        raise UserError(f"{file}: damaged: /files/content_offset holds offsets past 2**63")
    offsets = offsets.astype(np.int64)
    if len(offsets) != len(paths) + 1 or digests.shape != (len(paths), SHA256_BYTES) or digests.dtype != np.uint8:
        raise UserError(f"{file}: damaged: /files/path, content_offset and sha256 do not agree "
                        f"({len(paths)} paths, {len(offsets)} offsets, sha256 of shape {digests.shape})")
    if offsets[0] != 0 or (np.diff(offsets) < 0).any() or offsets[-1] != content.shape[0]:
        raise UserError(f"{file}: damaged: /files/content_offset does not run from 0 to the "
                        f"{content.shape[0]} bytes of /files/content in order")
    _check_filters(content, file)
    return paths, offsets, digests, content


def h5_has_text(file: Any) -> bool:
    """Whether an ``images_<id>.h5`` is ours and of a format holding each file's text (its attributes only)."""
    try:
        with h5py.File(file, "r") as h5:
            return h5.attrs.get("format") == H5_FORMAT and _format_version(h5, file) >= H5_TEXT_VERSION
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(f"{file}: cannot read HDF5 file ({_why(exc)})") from None


def read_texts_h5(file: Any) -> dict[str, bytes]:
    """``{file path: its published bytes}`` of a format 3 ``images_<id>.h5`` (each checked against its sha256)."""
    return {text.path: text.content for text in iter_texts_h5(file)}


def _read_h5_v1(h5: h5py.File) -> dict[str, np.ndarray]:
    """Format 1: one ``/segments`` dataset in the record's widest dtype; ``/files/path`` and ``/files/offset``."""
    segments = h5["segments"][()].astype(np.uint32, copy=False)
    paths = h5["files/path"].asstr()[()]
    offsets = h5["files/offset"][()].astype(np.int64)
    return {str(p): segments[offsets[i]:offsets[i + 1]] for i, p in enumerate(paths)}


def _read_h5_v2(h5: h5py.File, file: Any) -> dict[str, np.ndarray]:
    """Format 2: ``/segments_uint{8,16,32}`` by each file's dtype; ``/files/{path,offset,itemsize,start}``. Each
    dataset is read whole once (one read beats one per file for records of many small files)."""
    index = _ImageIndex(h5, file)
    data = {itemsize: dataset[()].astype(np.uint32, copy=False) for itemsize, dataset in index.datasets.items()}
    return {str(path): index.read(i, data) for i, path in enumerate(index.paths)}


def _check_filters(dataset: h5py.Dataset, file: Any) -> None:
    """A dataset compressed with a plugin filter (zstd) asks for hdf5plugin, by name, before h5py fails obscurely."""
    plist = dataset.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        code, _, _, label = plist.get_filter(i)
        if h5py.h5z.filter_avail(code):
            continue
        with contextlib.suppress(ImportError):
            import hdf5plugin  # noqa: F401 - importing it registers its filters with HDF5
        if not h5py.h5z.filter_avail(code):
            what = label.decode(errors="replace") if isinstance(label, bytes) else str(label)
            raise UserError(f"{file}: its images are compressed with HDF5 filter {code} ({what or 'a plugin'}), "
                            f"which needs hdf5plugin: {HDF5PLUGIN_HINT}")


def _read_2018_h5(h5: h5py.File, file: Any) -> dict[str, np.ndarray]:
    """The 2018 layout: one dataset per image named ``<path>__<i>`` (``/`` in a path made groups), int64 rows."""
    found: dict[str, dict[int, np.ndarray]] = {}
    foreign: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if not isinstance(obj, h5py.Dataset):
            return
        match = _LEGACY_NAME.fullmatch(name)
        if match is None or obj.ndim != 2 or obj.dtype.kind not in "iu":
            foreign.append(name)
            return
        found.setdefault(match["path"], {})[int(match["index"])] = obj[()]

    h5.visititems(visit)
    if foreign:
        raise UserError(f"{file}: not a zenodo-hpc images file (no format={H5_FORMAT} attribute) nor a 2018 one "
                        f"(2-D datasets named <path>__<i>): it holds {foreign[0]!r}")
    out = {}
    for path in sorted(found):
        by_index = found[path]
        if sorted(by_index) != list(range(len(by_index))):
            raise UserError(f"{file}: {path} has images {sorted(by_index)}, not 0 to {len(by_index) - 1}")
        out[path] = _legacy_stack([by_index[i] for i in range(len(by_index))], f"{file}: {path}")
    return out


def _legacy_stack(segments: list[Any], where: str) -> np.ndarray:
    """2018 images (int64, the last one shorter than 80 rows) as ``(n, 80, 80)`` uint32, padded with spaces."""
    arrays = [np.asarray(s) for s in segments]
    arrays = [a for a in arrays if not (a.ndim == 2 and a.shape[0] == 0)]  # an image of no rows: no image
    out = np.full((len(arrays), LEGACY_SIZE, LEGACY_SIZE), LEGACY_PAD, dtype=np.uint32)
    for j, array in enumerate(arrays):
        if array.ndim != 2 or array.shape[0] > LEGACY_SIZE or array.shape[1] > LEGACY_SIZE:
            raise UserError(f"{where}: image {j} has shape {array.shape}, expected at most (80, 80)")
        if array.size and (array.dtype.kind not in "iu" or array.min() < 0 or array.max() > 0x10FFFF):
            raise UserError(f"{where}: image {j} holds values that are not code points")
        out[j, :array.shape[0], :array.shape[1]] = array
    return out


def read_images_pkl(file: Path) -> dict[str, np.ndarray]:
    return images_from_pickle(read_file(file), str(file))


def read_file(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as exc:
        raise UserError(f"{file}: cannot read it ({exc.strerror or exc})") from None


# --- decoding a record's files from bytes (also used for files read out of an image) ------------------


def images_from_pickle(data: bytes, name: str) -> dict[str, np.ndarray]:
    """The pickle ``{path: [array(80, 80), ...]}`` as ``{path: (n, 80, 80) uint32}``.

    Ours (int32, or uint32 before) come back as written; 2018's (int64) are padded to 80 x 80 with spaces.
    """
    legacy = _unpickle(data, name)
    if not isinstance(legacy, dict):
        raise UserError(f"{name}: expected a dict of file path -> list of arrays")
    out = {}
    try:
        for key, segs in legacy.items():
            arrays = [np.asarray(s) for s in segs]
            if not arrays:
                out[key] = np.empty((0, LEGACY_SIZE, LEGACY_SIZE), dtype=np.uint32)
            elif all(a.dtype in _OUR_PICKLE_DTYPES for a in arrays):
                out[key] = np.stack(arrays).astype(np.uint32, copy=False)
            else:  # 2018's int64 from pandas: the last image is short
                out[key] = _legacy_stack(arrays, f"{name}: {key}")
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
    if isinstance(meta.get("tree"), ContainerTreeObject):
        meta = dict(meta, tree=tree_from_containertree(meta["tree"]))
    return meta


# --- pickles, safely --------------------------------------------------------------------------------------


class ContainerTreeObject:
    """An object of the ``containertree`` package, read without it: its attributes and nothing else.

    2018's metadata pickles hold a ``containertree.tree.ContainerTree`` (containertree 0.0.4) whose ``root``
    is a ``containertree.tree.Node`` (attributes ``filepath``, ``children``, ``leaf``, ``size``, ``name``,
    ``tags``, ``counter``). No method of the real classes exists here, so nothing of theirs can run.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (__dict__, __slots__ values)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update({str(k): v for k, v in state.items()})

    def __repr__(self) -> str:
        return f"<{type(self).__module__}.{type(self).__name__} read without containertree>"


_CONTAINERTREE_CLASSES: dict[tuple[str, str], type] = {}


def _containertree_class(module: str, name: str) -> type:
    """One stand-in class per containertree class name, so that ``type(obj).__name__`` still says which."""
    key = (module, name)
    if key not in _CONTAINERTREE_CLASSES:
        _CONTAINERTREE_CLASSES[key] = type(name, (ContainerTreeObject,), {"__module__": module})
    return _CONTAINERTREE_CLASSES[key]


def _numpy_functions() -> dict[tuple[str, str], Any]:
    """numpy's reconstruction functions under the module names numpy 1 and 2 pickle them with."""
    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
    scalar = np.int64(0).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = frombuffer
    return allowed


class SafeUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, plain Python values and containertree trees; refuses every other global.

    A pickle names the functions it calls (``os.system``, ``builtins.eval``, ...) through ``find_class``:
    only numpy's array and scalar reconstruction, ``set``, ``frozenset``, ``bytes``, ``bytearray``,
    ``complex``, ``_codecs.encode`` (bytes in protocol 2) and stand-ins for containertree's classes are given.
    """

    _ALLOWED: dict[tuple[str, str], Any] = {
        **_numpy_functions(),
        ("builtins", "set"): set, ("builtins", "frozenset"): frozenset, ("builtins", "bytes"): bytes,
        ("builtins", "bytearray"): bytearray, ("builtins", "complex"): complex,
        ("_codecs", "encode"): codecs.encode,
    }

    def find_class(self, module: str, name: str) -> Any:
        found = self._ALLOWED.get((module, name))
        if found is not None:
            return found
        if (module == "containertree" or module.startswith("containertree.")) and name.isidentifier():
            return _containertree_class(module, name)
        raise RefusedPickle(f"{module}.{name}")


class RefusedPickle(pickle.UnpicklingError):
    """A pickle naming a global that :class:`SafeUnpickler` does not give."""


def _unpickle(data: bytes, name: str) -> Any:
    """Unpickle a record's file with :class:`SafeUnpickler`: a pickle that would call anything else is refused."""
    try:
        return SafeUnpickler(io.BytesIO(data)).load()
    except RefusedPickle as exc:
        raise UserError(f"{name}: refused: this pickle would call {exc}, which is not a numpy array, a plain value "
                        "or a containertree tree (unpickling it could run any code); nothing was run") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError, IndexError, KeyError,
            TypeError, struct.error, MemoryError, OverflowError, RecursionError) as exc:  # from damaged pickles
        raise UserError(f"{name}: cannot read pickle ({_why(exc)})") from None


def tree_from_containertree(tree: Any) -> dict[str, Any]:
    """A containertree ``ContainerTree`` (2018) as today's tree: ``{"type": "dir", "children": {name: node}}``.

    Leaves with no children are files (``size`` from the node, when it has one); every other node is a
    folder. 2018's intermediate nodes carried the attributes of the first file beneath them: they are dropped.
    """
    root = getattr(tree, "root", None)
    out: dict[str, Any] = {"type": "dir", "children": {}}
    stack = [(root, out)]
    while stack:
        node, target = stack.pop()
        children = getattr(node, "children", None) or []
        for child in sorted(children, key=lambda c: str(getattr(c, "filepath", ""))):
            name = str(getattr(child, "filepath", ""))
            if getattr(child, "children", None):
                sub: dict[str, Any] = {"type": "dir", "children": {}}
                stack.append((child, sub))
            elif getattr(child, "leaf", False):
                sub = {"type": "file"}
                if isinstance(getattr(child, "size", None), int):
                    sub["size"] = child.size
            else:
                sub = {"type": "dir", "children": {}}
            target["children"][name] = sub
    return out


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
