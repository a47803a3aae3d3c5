"""Read records straight out of the squashfs image, without mounting it.

Mounting needs ``squashfuse`` or root, which laptops, CI and many login nodes lack; a pure-Python reader
(``PySquashfsImage``, plus ``zstandard`` for the zstd blocks ``pack`` writes) only needs the file. It is an
optional extra (``image``; zenodo-hpc is not on PyPI, so the hint names the two packages themselves, which are):
the package imports and works without it, and only the functions here that open an image ask for it.

A member of an image is written ``<image>:<path inside>``, e.g. ``zenodo-ml.sqsh:1065022/images_1065022.h5``
or ``zenodo-ml.sqsh:1065022`` (a record folder); :func:`split_image_path` parses that form.

Images come back exactly as :func:`zenodo_hpc.load.load_images` returns them from a folder:
``{file path: (n, 80, 80) uint32}``; metadata as :func:`zenodo_hpc.load.load_metadata` does.
"""

from __future__ import annotations

import io
import logging
import os
import posixpath
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ..core.errors import UserError
from ..core.state import file_digest
from .decode import (
    NoStoredText,
    images_from_pickle,
    metadata_from_json,
    metadata_from_pickle,
    read_images_h5,
    read_texts_h5,
)

if TYPE_CHECKING:  # only in annotations: reading an image's names needs no numpy
    import numpy as np

log = logging.getLogger(__name__)

IMAGE_SEPARATOR = ":"
IMAGE_SUFFIXES = (".sqsh", ".squashfs")
# The image extra's two packages (pyproject.toml pins the same): PyPI has them, where zenodo-hpc is not.
READER_REQUIREMENTS = "'PySquashfsImage>=0.9,<0.10' 'zstandard>=0.18'"
INSTALL_HINT = f"python -m pip install {READER_REQUIREMENTS}"
LISTED_NAMES = 8  # how many names an error message shows before "... (N in all)"

_PIP_NAMES = {"lzo": "python-lzo", "lz4": "lz4"}  # modules PySquashfsImage imports for lzo/lz4 images
_IN_IMAGE = re.compile(r"\.(?:sqsh|squashfs)" + re.escape(IMAGE_SEPARATOR))
_RECORD_FILE = re.compile(r"(?:images|metadata)_(?P<id>.+)\.(?:h5|pkl|json)")


def split_image_path(path: str | os.PathLike[str]) -> tuple[Path, str] | None:
    """``"x.sqsh:7/images_7.h5"`` -> ``(Path("x.sqsh"), "7/images_7.h5")``; ``None`` for an ordinary path.

    Why so careful: ``:`` is legal in file names, so only ``.sqsh:``/``.squashfs:`` starts a member, and a
    path that exists on disk as written is always ordinary. When several ``.sqsh:`` occur, the first prefix
    that is an existing file wins (else the first), so a folder named ``a.sqsh:b`` still works.
    ``"x.sqsh"`` alone is the whole image, ``(Path("x.sqsh"), "")``, unless it is a folder (an extracted image).
    """
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if text.endswith(IMAGE_SUFFIXES):
        return None if os.path.isdir(text) else (Path(text), "")
    cuts = [m.end() for m in _IN_IMAGE.finditer(text)]
    if not cuts or os.path.lexists(text):
        return None
    cut = next((c for c in cuts if os.path.isfile(text[:c - len(IMAGE_SEPARATOR)])), cuts[0])
    return Path(text[:cut - len(IMAGE_SEPARATOR)]), normalize_member(text[cut:])


def normalize_member(member: str) -> str:
    """``"/7//images_7.h5"``, ``"./7/"`` -> ``"7/images_7.h5"``, ``"7"``; the image root is ``""``."""
    norm = posixpath.normpath("/" + str(member).replace(os.sep, "/"))
    return norm.lstrip("/")


def _squashfs_class() -> Any:
    """``PySquashfsImage.SquashFsImage``, imported only when an image is opened (it is an optional extra)."""
    try:
        from PySquashfsImage import SquashFsImage
    except ImportError:
        raise UserError(f"reading a squashfs image without mounting it needs PySquashfsImage: {INSTALL_HINT} "
                        "(or mount the image, see docs/image.md)") from None
    return SquashFsImage


def _damage_errors() -> tuple[type[BaseException], ...]:
    """What the reader raises on a damaged or truncated image (it has no error type of its own)."""
    errors: tuple[type[BaseException], ...] = (OSError, ValueError, KeyError, IndexError, struct.error,
                                                EOFError, RuntimeError, MemoryError, OverflowError)
    try:
        import zstandard
    except ImportError:
        return errors
    return (*errors, zstandard.ZstdError)


class SquashImage:
    """One open squashfs image: list it and read its files as bytes. Not thread-safe (one per thread).

    Opening reads the whole directory tree (~0.2 s per 10,000 files); file data is read on demand.
    """

    def __init__(self, path: str | os.PathLike[str], *, verify: bool = False) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise UserError(f"{self.path} does not exist")
        if self.path.is_dir():
            raise UserError(f"{self.path} is a folder, not a squashfs image (a mounted or extracted image? "
                            "use zenodo_hpc.load.load_images on its record folders)")
        if verify:
            if _checksum_file(self.path, "md5").exists():
                verify_image_checksum(self.path)
            else:
                log.warning("%s: no %s.md5 beside it, not verified", self.path, self.path.name)
        squashfs = _squashfs_class()
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - owned by the reader until close()
        except OSError as exc:
            raise UserError(f"{self.path}: cannot open it ({exc.strerror or exc})") from None
        try:
            self._fs = squashfs(handle)
        except ImportError as exc:  # the image's compressor needs a module that is missing
            handle.close()
            missing = (exc.name or "a decompressor").split(".")[0]
            extra = "" if missing == "zstandard" else f" and pip install {_PIP_NAMES.get(missing, missing)}"
            raise UserError(f"{self.path}: its blocks are compressed with a codec that needs {missing}: "
                            f"{INSTALL_HINT}{extra}") from None
        except _damage_errors() as exc:
            handle.close()
            raise UserError(f"{self.path}: not a readable squashfs image ({_why(exc)}); is it damaged or "
                            "incomplete? check it with verify_image_checksum or md5sum -c") from None

    def close(self) -> None:
        """Close the file, and drop the reader's cache of decompressed blocks (shared, up to 256 MiB)."""
        fs = getattr(self, "_fs", None)
        if fs is not None and fs._fd is not None:
            fs.close()
            cache = getattr(type(fs)._read_data_block, "cache_clear", None)
            if cache is not None:
                cache()

    def __enter__(self) -> SquashImage:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SquashImage({str(self.path)!r})"

    def _name(self, member: str) -> str:
        return f"{self.path}{IMAGE_SEPARATOR}{member}" if member else str(self.path)

    def _node(self, member: str) -> Any:
        """The reader's file object at ``member``, or None."""
        node = self._fs.root
        for part in normalize_member(member).split("/"):
            if not part:
                continue
            if not node.is_dir or part not in node.children:
                return None
            node = node.children[part]
        return node

    def _missing(self, member: str) -> UserError:
        """``<member> is not in <image>``, saying what the nearest existing folder holds."""
        member = normalize_member(member)
        parent = posixpath.dirname(member)
        while parent and not self.is_dir(parent):
            parent = posixpath.dirname(parent)
        names = self.listdir(parent)
        where = f"{parent}/ holds" if parent else "its root holds"
        shown = ", ".join(names[:LISTED_NAMES]) + (f", ... ({len(names)} in all)" if len(names) > LISTED_NAMES
                                                   else "")
        return UserError(f"{member} is not in {self.path}: {where} {shown or 'nothing'}")

    def exists(self, member: str) -> bool:
        return self._node(member) is not None

    def is_dir(self, member: str) -> bool:
        node = self._node(member)
        return node is not None and node.is_dir

    def is_file(self, member: str) -> bool:
        node = self._node(member)
        return node is not None and node.is_file

    def listdir(self, member: str = "") -> list[str]:
        """Sorted names in the folder ``member`` (``""``: the image root)."""
        node = self._node(member)
        if node is None:
            raise self._missing(member)
        if not node.is_dir:
            raise UserError(f"{self._name(normalize_member(member))} is a file, not a folder")
        return sorted(node.children)

    def read_bytes(self, member: str) -> bytes:
        """The whole content of one file of the image (records' files are at most a few hundred MB)."""
        member = normalize_member(member)
        node = self._node(member)
        if node is None:
            raise self._missing(member)
        if node.is_dir:
            raise UserError(f"{self._name(member)} is a folder, not a file (it holds "
                            f"{', '.join(sorted(node.children)[:LISTED_NAMES]) or 'nothing'})")
        if node.is_symlink:
            target = node.readlink().decode(errors="replace")
            raise UserError(f"{self._name(member)} is a symbolic link (to {target}), not a file")
        if not node.is_file:
            raise UserError(f"{self._name(member)} is not a regular file")
        try:
            data = node.read_bytes()
        except _damage_errors() as exc:
            raise UserError(f"{self._name(member)}: cannot read it ({_why(exc)}): the image is damaged "
                            "or incomplete") from None
        if len(data) != node.size:
            raise UserError(f"{self._name(member)}: read {len(data)} bytes of {node.size}: the image is damaged "
                            "or incomplete")
        return data

    def walk_files(self) -> Iterator[tuple[str, int]]:
        """``(path, size)`` of every regular file, sorted by path: what a listing or a checker needs."""
        files = [(f.path.lstrip("/"), int(f.size)) for f in self._fs.root.riter() if f.is_file]
        yield from sorted(files)

    def record_ids(self) -> list[str]:
        """Top-level folders holding ``images_<id>.*`` or ``metadata_<id>.*``, numeric ids in numeric order."""
        ids = []
        for name, node in self._fs.root.children.items():
            if node.is_dir and any(_record_id_of(child) == name for child in node.children):
                ids.append(name)
        return sorted(ids, key=_id_order)

    def images(self, member: str) -> dict[str, np.ndarray]:
        """``{file path: (n, 80, 80) uint32}`` of a record folder, or of its ``images_<id>.h5``/``.pkl``."""

        file = self._record_file(member, "images", (".h5", ".pkl"))
        data = self.read_bytes(file)
        if file.endswith(".h5"):
            try:
                return read_images_h5(_Member(data, self._name(file)))
            except TypeError as exc:  # h5py's word for some damaged object headers
                raise UserError(f"{self._name(file)}: cannot read HDF5 file ({_why(exc)})") from None
        return images_from_pickle(data, self._name(file))

    def texts(self, member: str) -> dict[str, bytes]:
        """``{file path: its published bytes}`` of a record folder or its ``images_<id>.h5`` (format 3 only)."""
        file = self._record_file(member, "images", (".h5", ".pkl"))
        if not file.endswith(".h5"):
            raise NoStoredText(f"{self._name(file)}: holds no text (only images_<id>.h5 of format_version 3 does; "
                               "the pickle keeps 2018's layout)")
        try:
            return read_texts_h5(_Member(self.read_bytes(file), self._name(file)))
        except TypeError as exc:  # h5py's word for some damaged object headers
            raise UserError(f"{self._name(file)}: cannot read HDF5 file ({_why(exc)})") from None

    def metadata(self, member: str) -> dict[str, Any]:
        """The metadata dict of a record folder, or of its ``metadata_<id>.json``/``.pkl``."""
        file = self._record_file(member, "metadata", (".json", ".pkl"))
        data = self.read_bytes(file)
        if file.endswith(".json"):
            return metadata_from_json(data, self._name(file))
        return metadata_from_pickle(data, self._name(file))

    def _record_file(self, member: str, prefix: str, suffixes: tuple[str, ...]) -> str:
        """In a record folder, the ``<prefix>_<id><suffix>`` file, trying ``suffixes`` in order (as load.py)."""
        member = normalize_member(member)
        if not member:
            raise UserError(f"{self.path}: name a record folder or file inside it, e.g. "
                            f"{self._name(self._example())}")
        if not self.is_dir(member):
            name = posixpath.basename(member)
            if self.exists(member) and not (name.startswith(f"{prefix}_") and name.endswith(suffixes)):
                wanted = " or ".join(f"{prefix}_<id>{s}" for s in suffixes)
                raise UserError(f"{self._name(member)}: expected {wanted} here")
            return member
        record_id = posixpath.basename(member)
        for suffix in suffixes:
            candidate = f"{member}/{prefix}_{record_id}{suffix}"
            if self.is_file(candidate):
                return candidate
        wanted = " or ".join(f"{prefix}_{record_id}{s}" for s in suffixes)
        holds = ", ".join(self.listdir(member)[:LISTED_NAMES]) or "nothing"
        raise UserError(f"{self._name(member)} is not a record folder: it has no {wanted} (it holds {holds})")

    def _example(self) -> str:
        ids = self.record_ids()
        return ids[0] if ids else "<id>"


def verify_image_checksum(path: str | os.PathLike[str]) -> str:
    """The image's md5 if it matches ``<image>.md5`` (and its sha256 ``<image>.sha256``, when present).

    Why: a copy cut short or a flipped bit is otherwise found only when some record fails to decode, or
    not at all (blocks mksquashfs could not compress are stored raw). The digests are those ``md5sum -c``
    and ``sha256sum -c`` check; both come from one pass over the image.
    """
    image = Path(path)
    if not image.is_file():
        raise UserError(f"{image} does not exist" if not image.exists() else f"{image} is not a file")
    md5_file, sha_file = _checksum_file(image, "md5"), _checksum_file(image, "sha256")
    if not md5_file.exists():
        raise UserError(f"{image}: no {md5_file.name} beside it, nothing to verify against")
    want_md5 = _read_checksum(md5_file, 32)
    want_sha = _read_checksum(sha_file, 64) if sha_file.exists() else None
    try:
        md5, sha, _ = file_digest(image)
    except OSError as exc:
        raise UserError(f"{image}: cannot read it ({exc.strerror or exc})") from None
    if md5 != want_md5:
        raise UserError(f"{image}: md5 {md5} does not match {md5_file.name} ({want_md5}): the image is damaged "
                        "or incomplete")
    if want_sha is not None and sha != want_sha:
        raise UserError(f"{image}: sha256 {sha} does not match {sha_file.name} ({want_sha}): the image is damaged "
                        "or incomplete")
    return md5


def _checksum_file(image: Path, kind: str) -> Path:
    return image.with_name(f"{image.name}.{kind}")


def _read_checksum(file: Path, length: int) -> str:
    """The hex digest of an ``md5sum``/``sha256sum`` line: ``<hex>  <name>`` (or ``<hex> *<name>``)."""
    try:
        text = file.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UserError(f"{file}: cannot read it ({exc.strerror or exc})") from None
    digest = text.split(maxsplit=1)[0].lower() if text.strip() else ""
    if not re.fullmatch(rf"[0-9a-f]{{{length}}}", digest):
        raise UserError(f"{file}: not a checksum line (expected '<{length} hex digits>  <file name>')")
    return digest


def iter_image_records(path: str | os.PathLike[str], *, verify: bool = False
                       ) -> Iterator[tuple[str, dict[str, np.ndarray], dict[str, Any]]]:
    """``(id, images, metadata)`` of every record of the image, in id order, one record in memory at a time.

    Images come from ``images_<id>.h5`` (else ``.pkl``), metadata from ``metadata_<id>.json`` (else ``.pkl``).
    """
    with SquashImage(path, verify=verify) as image:
        for record_id in image.record_ids():
            yield record_id, image.images(record_id), image.metadata(record_id)


def _image_and_member(path: str | os.PathLike[str], member: str | None) -> tuple[Path, str]:
    """``(image, member)`` from ``(image, member)`` or from one ``"image.sqsh:member"`` string."""
    if member is None:
        split = split_image_path(path)
        if split is None:
            raise UserError(f"{os.fspath(path)} is not inside a squashfs image (write <image>.sqsh:<id>)")
        return split
    return Path(path), member


def load_images_from_image(path: str | os.PathLike[str], member: str | None = None) -> dict[str, np.ndarray]:
    """Images of one record of the image; ``member`` is its folder (``"1065022"``) or one of its files.

    Also takes one ``"zenodo-ml.sqsh:1065022"`` string as ``path`` (no ``member``).
    """
    image_path, member = _image_and_member(path, member)
    with SquashImage(image_path) as image:
        return image.images(member)


def load_files_from_image(path: str | os.PathLike[str], member: str | None = None) -> dict[str, bytes]:
    """Each file's text of one record of the image (format 3); ``member`` is its folder or its ``images_<id>.h5``."""
    image_path, member = _image_and_member(path, member)
    with SquashImage(image_path) as image:
        return image.texts(member)


def load_metadata_from_image(path: str | os.PathLike[str], member: str | None = None) -> dict[str, Any]:
    """Metadata of one record of the image; ``member`` is its folder (``"1065022"``) or one of its files."""
    image_path, member = _image_and_member(path, member)
    with SquashImage(image_path) as image:
        return image.metadata(member)


def member_file(image: SquashImage, member: str) -> io.BytesIO:
    """A file of the image, read whole, as a file object h5py and the decoders take; it prints as
    ``image.sqsh:member`` in their error messages."""
    return _Member(image.read_bytes(member), image._name(member))


# Decoding files given as bytes: load.py's decoders, which the path-based readers use too.

class _Member(io.BytesIO):
    """A file of the image as a file object that prints as ``image.sqsh:member`` in error messages."""

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self._label = name

    def __str__(self) -> str:
        return self._label


def _record_id_of(file_name: str) -> str | None:
    match = _RECORD_FILE.fullmatch(file_name)
    return match.group("id") if match else None


def _id_order(record_id: str) -> tuple[int, int, str]:
    """Zenodo ids are integers: 9 before 10; other names after them, by name."""
    return (0, int(record_id), "") if record_id.isdigit() else (1, 0, record_id)


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
