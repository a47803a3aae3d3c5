"""Safe extraction of the zip and tar archives of Zenodo records.

Archives come from strangers, so extraction trusts nothing in them: every entry name and link target is
checked before anything is written, nothing is ever written through a symlink, special files and
setuid bits are dropped, and the bytes actually written (not the sizes the archive declares) are
counted against ``extract.max_bytes``. ``tarfile.extractall``/``zipfile.extractall`` are not used:
each regular member is streamed by hand so the limits hold chunk by chunk.

Every refusal is an :class:`~zenodo_hpc.core.errors.ExtractError` with a one-line message naming the archive
and the entry, and a ``reason``: ``bad_archive``, ``unsafe_archive`` or ``too_large``.

A member whose name the disk or the record's outputs cannot hold (not UTF-8, too deep, a component or the
whole path too long) is no attack: it alone is skipped and reported in ``ExtractStats.skipped``.

Where to extract (docs/extract.md): :func:`choose_memory_root` picks a RAM-backed folder (a tmpfs such as
``/dev/shm``, or ``$SLURM_TMPDIR``/``$TMPDIR`` when they are one) for an archive whose expected size fits the
budget, the folder's free space and half of the memory the job has left; ``extract_archive(...,
footprint_limit=...)`` then stops with :class:`OverFootprint` if the archive takes more there than that, and
the caller extracts it on node-local disk instead.
"""

from __future__ import annotations

import bisect
import builtins
import bz2
import gzip
import io
import lzma
import os
import posixpath
import re
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from zenodo_hpc.core.errors import ExtractError

ARCHIVE_SUFFIXES: tuple[str, ...] = (
    ".zip",
    ".tar",
    ".tar.gz",
    ".tgz",
    ".tar.bz2",
    ".tbz2",
    ".tar.xz",
    ".txz",
)

BAD_ARCHIVE = "bad_archive"
UNSAFE_ARCHIVE = "unsafe_archive"
TOO_LARGE = "too_large"

# Why one member was skipped for its name (the archive goes on with the next member).
BAD_NAME = "bad_name"  # not valid UTF-8, or holds a NUL: JSON and HDF5 keys must be valid UTF-8
NAME_TOO_LONG = "name_too_long"  # a component over MAX_NAME_BYTES: the disk refuses it (ENAMETOOLONG)
TOO_DEEP = "too_deep"  # more than MAX_DEPTH components
PATH_TOO_LONG = "path_too_long"  # over MAX_PATH_BYTES in all: the disk refuses it (ENAMETOOLONG)

# Every later stage walks the record's tree: the nested metadata dict is written with json.dumps and pickle,
# which recurse once per level (twice per folder: node and children), and shutil.rmtree of the temporary
# folder recurses and holds one open descriptor per level. 128 folders keep all of them far below Python's
# default recursion limit (1000) and the usual limit of 1024 open files, and is deeper than real code goes.
MAX_DEPTH = 128
MAX_NAME_BYTES = 255  # NAME_MAX on Linux, in bytes of the UTF-8 encoding
MAX_PATH_BYTES = 3072  # leaves 1 KiB of Linux's PATH_MAX (4096) for the extraction folder's own path
MAX_LISTED_SKIPS = 1000  # skipped members listed by key; more are only counted (an archive may hold 100,000)
MAX_SKIP_KEY_CHARS = 1024  # a longer key of a skipped member keeps its start and end around "…"

CHUNK_SIZE = 1 << 20
KEPT_BYTES = 64 << 20  # at most this much of an archive's small files is kept in memory (ExtractStats.contents)
MAX_SYMLINK_TARGET = 4095  # PATH_MAX - 1 on Linux; longer targets cannot be created anyway
_TRAILER_DRAIN_LIMIT = 16 << 20  # bytes read after a compressed tar's end marker to reach its checksum

_BLOCK = tarfile.BLOCKSIZE
_ZERO_BLOCK = bytes(_BLOCK)
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_COMPRESSIONS = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz"}
_OPENERS: dict[str, Callable[..., io.BufferedIOBase]] = {"gzip": gzip.open, "bzip2": bz2.open, "xz": lzma.open}
_UNSUPPORTED = {
    b"7z\xbc\xaf\x27\x1c": "a 7z archive",
    b"Rar!\x1a\x07": "a RAR archive",
    b"\x28\xb5\x2f\xfd": "zstd-compressed",
}
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_DRIVE = re.compile(r"^[A-Za-z]:")
_SEPARATORS = re.compile(r"[/\\]")

# What the decompressors and readers raise on corrupt or truncated input (bz2 raises plain OSError).
_CORRUPT_ERRORS = (
    tarfile.TarError,
    zipfile.BadZipFile,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    OSError,
    struct.error,
    ValueError,
)

_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class ExtractStats:
    """What one extraction put on disk (``bytes`` counts every byte written, replaced duplicates too)."""

    members: int = 0
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    skipped_special: int = 0  # FIFOs, devices and unknown tar entry types, never created
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (printable key, reason), MAX_LISTED_SKIPS at most
    skipped_unlisted: dict[str, int] = field(default_factory=dict)  # reason -> skipped members beyond those listed
    # What the entries take on a tmpfs (files in whole pages, ENTRY_OVERHEAD per entry): see footprint_limit.
    footprint: int = field(default=0, compare=False)
    # The bytes of the small files as written (relative path -> bytes; see keep_files_up_to), so that the walk
    # need not open and read them again.
    contents: dict[str, builtins.bytes] = field(default_factory=dict, compare=False, repr=False)  # builtins: the
    # field ``bytes`` above hides the type inside the class


class OverFootprint(Exception):
    """The extraction would take more than its ``footprint_limit``: no fault of the archive, which the caller
    extracts elsewhere (node-local disk instead of RAM)."""


def is_utf8_text(text: str) -> bool:
    """False for text holding undecodable bytes (surrogate escapes) or NUL: no file key may hold them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def printable_name(text: str) -> str:
    """``text`` with undecodable bytes (surrogate escapes) and NUL as U+FFFD, so JSON and HDF5 can hold it."""
    if is_utf8_text(text):
        return text
    try:
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
        text = re.sub("[\ud800-\udfff]", "\ufffd", text)
    return text.replace("\x00", "\ufffd")


def name_problem(parts: list[str]) -> str | None:
    """Why a member with these normalised components cannot be extracted as it is named, or None."""
    if not all(is_utf8_text(part) for part in parts):
        return BAD_NAME
    if any(len(part.encode("utf-8")) > MAX_NAME_BYTES for part in parts):
        return NAME_TOO_LONG
    if len(parts) > MAX_DEPTH:
        return TOO_DEEP
    if len("/".join(parts).encode("utf-8")) > MAX_PATH_BYTES:
        return PATH_TOO_LONG
    return None


def is_archive_name(name: str) -> bool:
    """True when a file name ends with an archive suffix (any case): picks a record's archive by name."""
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def archive_kind(path: Path) -> str:
    """``'zip'`` or ``'tar'``, from the file's content: download names and error pages both lie."""
    return _sniff(Path(path))[0]


def extract_archive(archive: Path, dest: Path, *, max_bytes: int, max_members: int,
                    footprint_limit: int | None = None, keep_files_up_to: int = 0) -> ExtractStats:
    """Extract ``archive`` into the existing empty folder ``dest``, refusing anything unsafe.

    On error whatever was already extracted stays in ``dest`` (the caller removes it); nothing is
    ever written outside ``dest``. With ``footprint_limit``, :class:`OverFootprint` stops the extraction
    before the entries take more than that many bytes of a tmpfs (``ExtractStats.footprint``). The bytes
    of files of at most ``keep_files_up_to`` bytes are kept in ``ExtractStats.contents`` as written, up to
    KEPT_BYTES in all (the later files are only on disk).
    """
    archive, dest = Path(archive), Path(dest)
    _require_empty_dir(dest)
    kind, compression = _sniff(archive)
    writer = _SafeWriter(
        archive.name, dest, max_bytes=max_bytes, max_members=max_members, backslash_separates=kind == "zip",
        footprint_limit=footprint_limit, keep_files_up_to=keep_files_up_to,
    )
    if kind == "zip":
        _extract_zip(archive, writer)
    else:
        _extract_tar(archive, compression, writer)
    writer.check_symlinks_stay_inside()
    return writer.stats


# --- recognising the archive -------------------------------------------------------------------------


def _sniff(path: Path) -> tuple[str, str | None]:
    """(kind, compression) from magic bytes; a clear ``bad_archive`` error when it is no archive."""
    with open(path, "rb") as f:
        head = f.read(2 * _BLOCK)
    if not head:
        raise ExtractError(f"{path.name} is empty, not an archive", reason=BAD_ARCHIVE)
    if head.startswith(_ZIP_MAGICS):
        return "zip", None
    for magic, compression in _COMPRESSIONS.items():
        if head.startswith(magic):
            if not _compressed_holds_tar(path, compression):
                raise ExtractError(
                    f"{path.name} is {compression}-compressed but does not hold a tar archive",
                    reason=BAD_ARCHIVE,
                )
            return "tar", compression
    if _is_tar_header(head[:_BLOCK]):
        return "tar", None
    if zipfile.is_zipfile(path):  # self-extracting or otherwise prefixed zip
        return "zip", None
    raise ExtractError(f"{path.name} {_describe_non_archive(head)}", reason=BAD_ARCHIVE)


def _compressed_holds_tar(path: Path, compression: str) -> bool:
    """Whether the first decompressed block is a tar header (reads only that block)."""
    with _as_bad_archive(path.name), _OPENERS[compression](path, "rb") as stream:
        return _is_tar_header(stream.read(_BLOCK))


def _is_tar_header(block: bytes) -> bool:
    """A valid tar header block, or the zero block that starts an empty tar."""
    if len(block) != _BLOCK:
        return False
    if block == _ZERO_BLOCK:
        return True
    try:
        tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except (tarfile.HeaderError, ValueError):
        return False
    return True


def _describe_non_archive(head: bytes) -> str:
    """Name what a non-archive download probably is: usually an error page served instead of the file."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text:
        return "looks like an HTML page, not an archive"
    if text.startswith(b"<"):
        return "looks like an XML document, not an archive"
    if text.startswith((b"{", b"[")):
        return "looks like a JSON document, not an archive"
    for magic, what in _UNSUPPORTED.items():
        if head.startswith(magic):
            return f"is {what}, which is not supported (only zip and tar)"
    return "is not a zip or tar archive (unrecognised content)"


# --- errors --------------------------------------------------------------------------------------------


def _q(name: str) -> str:
    """An entry name quoted for a one-line message: control characters escaped, very long names cut."""
    if len(name) > 200:
        name = name[:120] + "..." + name[-60:]
    return repr(name)


def _one_line(exc: BaseException) -> str:
    """The gist of an underlying error, on one short line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _unsafe(archive: str, entry: str, why: str) -> ExtractError:
    return ExtractError(f"unsafe entry {_q(entry)} in {archive}: {why}", reason=UNSAFE_ARCHIVE)


def _bad_entry(archive: str, entry: str, why: str) -> ExtractError:
    return ExtractError(f"bad entry {_q(entry)} in {archive}: {why}", reason=BAD_ARCHIVE)


@contextmanager
def _as_bad_archive(archive: str, entry: str | None = None) -> Iterator[None]:
    """Turn the many exceptions of corrupt input into one ``bad_archive`` error (wrap reads only)."""
    try:
        yield
    except _CORRUPT_ERRORS as exc:
        raise _corrupt(archive, entry, exc) from exc


def _corrupt(archive: str, entry: str | None, exc: BaseException) -> ExtractError:
    """The ``bad_archive`` error for what a reader raised on corrupt input (what :func:`_as_bad_archive` raises)."""
    where = f" at entry {_q(entry)}" if entry is not None else ""
    return ExtractError(f"{archive} is corrupt or truncated{where}: {_one_line(exc)}", reason=BAD_ARCHIVE)


# --- entry names -----------------------------------------------------------------------------------------


def _is_absolute(path: str) -> bool:
    """POSIX or Windows absolute (``/x``, ``\\x``, ``C:x``): all would leave the folder somewhere."""
    return path.startswith(("/", "\\")) or bool(_DRIVE.match(path))


def _has_dotdot(path: str) -> bool:
    """A ``..`` component, with backslash also taken as a separator (archives made on Windows)."""
    return ".." in _SEPARATORS.split(path)


def _split(path: str) -> list[str]:
    """Normalised components: empty and ``.`` components dropped (``./a//b/`` -> ``['a', 'b']``)."""
    return [part for part in path.split("/") if part not in ("", ".")]


def _skip_key(parts: list[str]) -> str:
    """A skipped member's key for the record's tree: printable, and at most MAX_SKIP_KEY_CHARS characters."""
    key = printable_name("/".join(parts))
    if len(key) <= MAX_SKIP_KEY_CHARS:
        return key
    half = (MAX_SKIP_KEY_CHARS - 1) // 2
    return key[:half] + "…" + key[-(MAX_SKIP_KEY_CHARS - 1 - half):]


def _file_mode(archive_mode: int) -> int:
    """0o755 when the archive marks the file executable at all, else 0o644: never setuid/setgid/sticky."""
    return 0o755 if archive_mode & 0o111 else 0o644


def _is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _require_empty_dir(dest: Path) -> None:
    """The conflict and symlink checks read the disk, so the folder must start empty (a caller bug if not)."""
    if not dest.is_dir():
        raise ValueError(f"extraction folder {dest} is not an existing directory")
    if any(dest.iterdir()):
        raise ValueError(f"extraction folder {dest} is not empty")


# --- writing -----------------------------------------------------------------------------------------------


class _SafeWriter:
    """Creates entries under one root, checking names, links, conflicts and limits for both formats."""

    def __init__(
        self, archive: str, dest: Path, *, max_bytes: int, max_members: int, backslash_separates: bool = False,
        footprint_limit: int | None = None, keep_files_up_to: int = 0,
    ) -> None:
        self.archive = archive
        self.keep_files_up_to = keep_files_up_to
        self._kept = 0  # bytes in stats.contents
        self.footprint_limit = footprint_limit
        self.backslash_separates = backslash_separates  # zips made by some Windows tools use ``\\``
        self.root = os.path.abspath(dest)
        self.root_real = os.path.realpath(dest)
        self.max_bytes = max_bytes
        self.max_members = max_members
        self.stats = ExtractStats()
        self._dirs: set[str] = set()  # verified real directories (never replaced once created)
        self._files: set[str] = set()  # regular files written, the only valid hard link targets
        self._symlinks: dict[str, None] = {}  # created symlinks, re-checked once all exist

    # limits

    def count_member(self, name: str) -> None:
        """Count one archive entry against ``max_members`` (and its inode against ``footprint_limit``)."""
        self.stats.members += 1
        if self.stats.members > self.max_members:
            raise ExtractError(
                f"{self.archive} has more than {self.max_members} entries (extract.max_members); "
                f"stopped at entry {_q(name)}",
                reason=TOO_LARGE,
            )
        self.stats.footprint += ENTRY_OVERHEAD
        self.check_footprint(0)

    def check_room(self, name: str, size: int) -> None:
        """Refuse an entry before writing it when its size alone would pass ``max_bytes``."""
        if self.stats.bytes + size > self.max_bytes:
            raise self.too_large_error(name)
        self.check_footprint(size)

    def check_footprint(self, file_bytes: int) -> None:
        """Stop before a file of ``file_bytes`` (whole pages) takes the entries past ``footprint_limit``."""
        if self.footprint_limit is not None and self.stats.footprint + _pages(file_bytes) > self.footprint_limit:
            raise OverFootprint(f"{self.archive} takes more than {self.footprint_limit} bytes where it is extracted")

    def too_large_error(self, name: str) -> ExtractError:
        return ExtractError(
            f"{self.archive} expands to more than {self.max_bytes} bytes (extract.max_bytes); "
            f"stopped at entry {_q(name)}",
            reason=TOO_LARGE,
        )

    # entries

    def add_dir(self, name: str) -> None:
        """Create a folder; one with an odd name is not created (its files are reported one by one)."""
        parts = self._parts(name)
        if not parts or name_problem(parts) is not None:
            return
        path = self._prepare_slot(parts, name, for_dir=True)
        if path is not None:
            self._mkdir(path, "/".join(parts))

    def add_file(self, name: str, src: IO[bytes], archive_mode: int, declared_size: int = 0) -> None:
        """Write a regular file, refusing it up front when ``declared_size`` alone would pass ``max_bytes``."""
        parts = self._parts(name)
        if not parts or self._skip_odd_name(parts):
            return
        self.check_room(name, declared_size)
        self._write_file(parts, name, src, _file_mode(archive_mode))

    def add_symlink(self, name: str, target: str) -> None:
        parts = self._parts(name)
        if not parts:
            return
        self._check_symlink_target(parts, name, target)
        if self._skip_odd_name(parts):
            return
        path = self._prepare_slot(parts, name, for_dir=False)
        assert path is not None  # for_dir=False: only an existing folder gives None, and that raises
        os.symlink(target, path)
        self.stats.symlinks += 1
        self._symlinks["/".join(parts)] = None

    def add_hardlink(self, name: str, target: str) -> None:
        """Materialise a tar hard link as a copy of a file extracted earlier (counted in ``bytes``)."""
        parts = self._parts(name)
        if not parts:
            return
        if _is_absolute(target):
            raise _unsafe(self.archive, name, f"hard link target {_q(target)} is absolute")
        if _has_dotdot(target):
            raise _unsafe(self.archive, name, f"hard link target {_q(target)} escapes the extraction folder")
        target_parts = _split(target)
        if self._skip_odd_name(parts):
            return
        target_problem = name_problem(target_parts)
        if target_problem is not None:  # its target was skipped (or never was): nothing to copy
            self._report_skip(parts, target_problem)
            return
        target_rel = "/".join(target_parts)
        if target_rel not in self._files:
            raise _unsafe(self.archive, name, f"hard link target {_q(target)} is not a file extracted earlier")
        if target_rel == "/".join(parts):
            return  # a link to itself: the file is already there
        source = os.path.join(self._ensure_dirs(target_parts[:-1], name), target_parts[-1])
        with os.fdopen(os.open(source, _READ_FLAGS), "rb") as src:
            info = os.fstat(src.fileno())
            self.check_room(name, info.st_size)
            self._write_file(parts, name, src, info.st_mode & 0o777)

    def skip_special(self, name: str) -> None:
        """FIFOs and devices are never created; their names are still checked so the verdict is uniform."""
        self._parts(name)
        self.stats.skipped_special += 1

    def check_symlinks_stay_inside(self) -> None:
        """Resolve every symlink for real once all exist: chains (``a -> .``, ``b -> a/..``) fool lexical checks."""
        for rel in self._symlinks:
            path = os.path.join(self.root, rel)
            if os.path.islink(path) and not _is_within(os.path.realpath(path), self.root_real):
                raise _unsafe(
                    self.archive, rel, "symlink resolves outside the extraction folder through other symlinks"
                )

    # helpers

    def _parts(self, name: str) -> list[str]:
        """The entry's normalised components, or an ``unsafe_archive`` error for absolute/``..`` names."""
        if _is_absolute(name):
            raise _unsafe(self.archive, name, "path is absolute")
        if _has_dotdot(name):
            raise _unsafe(self.archive, name, "path escapes the extraction folder")
        return _split(name.replace("\\", "/") if self.backslash_separates else name)

    def _skip_odd_name(self, parts: list[str]) -> bool:
        """Report and skip a member whose name the disk or the outputs cannot hold: an odd name is no attack."""
        problem = name_problem(parts)
        if problem is None:
            return False
        self._report_skip(parts, problem)
        return True

    def _report_skip(self, parts: list[str], reason: str) -> None:
        """List the first MAX_LISTED_SKIPS skipped members by key and only count the rest, so memory stays bounded."""
        if len(self.stats.skipped) < MAX_LISTED_SKIPS:
            self.stats.skipped.append((_skip_key(parts), reason))
        else:
            self.stats.skipped_unlisted[reason] = self.stats.skipped_unlisted.get(reason, 0) + 1

    def _check_symlink_target(self, parts: list[str], name: str, target: str) -> None:
        """Targets must stay inside, resolved lexically from the link's own folder."""
        if not target or "\x00" in target or len(target) > MAX_SYMLINK_TARGET:
            raise _bad_entry(self.archive, name, f"invalid symlink target {_q(target)}")
        if _is_absolute(target):
            raise _unsafe(self.archive, name, f"symlink target {_q(target)} is absolute")
        resolved = posixpath.normpath("/".join([*parts[:-1], target.replace("\\", "/")]))
        if resolved == ".." or resolved.startswith("../"):
            raise _unsafe(self.archive, name, f"symlink target {_q(target)} points outside the extraction folder")

    def _ensure_dirs(self, dir_parts: list[str], name: str) -> str:
        """Create missing parent folders; refuse a path through a symlink or a file. Returns the last one."""
        if "/".join(dir_parts) in self._dirs:  # verified with every folder above it, and never replaced since
            return os.path.join(self.root, *dir_parts)
        path = self.root
        for depth, part in enumerate(dir_parts, start=1):
            path = os.path.join(path, part)
            rel = "/".join(dir_parts[:depth])
            if rel in self._dirs:
                continue
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                self._mkdir(path, rel)
                continue
            if stat.S_ISLNK(info.st_mode):
                raise _unsafe(self.archive, name, f"path goes through symlink {_q(rel)}")
            if not stat.S_ISDIR(info.st_mode):
                raise _bad_entry(self.archive, name, f"{_q(rel)} is already a file, not a folder")
            self._dirs.add(rel)
        return path

    def _mkdir(self, path: str, rel: str) -> None:
        os.mkdir(path, 0o755)
        os.chmod(path, 0o755)  # whatever the umask
        self._dirs.add(rel)
        self.stats.dirs += 1

    def _prepare_slot(self, parts: list[str], name: str, *, for_dir: bool) -> str | None:
        """Make the entry's path free: later duplicates win, by unlinking (never following) the old one.

        A folder is never replaced, and a file never becomes a folder: those conflicts are ``bad_archive``.
        Returns the path, or None for a folder that already exists.
        """
        path = os.path.join(self._ensure_dirs(parts[:-1], name), parts[-1])
        rel = "/".join(parts)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return path
        if stat.S_ISDIR(info.st_mode):
            if for_dir:
                self._dirs.add(rel)
                return None
            raise _bad_entry(self.archive, name, f"{_q(rel)} is already a folder")
        if for_dir and not stat.S_ISLNK(info.st_mode):
            raise _bad_entry(self.archive, name, f"{_q(rel)} is already a file")
        os.unlink(path)
        self._forget_contents(rel)
        if stat.S_ISLNK(info.st_mode):
            self.stats.symlinks -= 1
            self._symlinks.pop(rel, None)
        else:
            self.stats.files -= 1
            self._files.discard(rel)
        return path

    def _write_file(self, parts: list[str], name: str, src: IO[bytes], mode: int) -> None:
        # The folder started empty and only this writer fills it, so a new name is created at once: O_EXCL
        # refuses any existing entry (a symlink is never followed), and only then is the slot made free.
        path = os.path.join(self._ensure_dirs(parts[:-1], name), parts[-1])
        try:
            fd = os.open(path, _WRITE_FLAGS, 0o600)
        except FileExistsError:  # a duplicate name: the later entry wins (or a folder is there: bad_archive)
            slot = self._prepare_slot(parts, name, for_dir=False)
            assert slot is not None
            fd = os.open(slot, _WRITE_FLAGS, 0o600)
        rel = "/".join(parts)
        try:
            written = self._copy_capped(src, fd, name, rel)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        self.stats.footprint += _pages(written)
        self.stats.files += 1
        self._files.add(rel)

    def _keep_contents(self, rel: str, data: bytes) -> None:
        if self.keep_files_up_to > 0 and len(data) <= self.keep_files_up_to and self._kept + len(data) <= KEPT_BYTES:
            self.stats.contents[rel] = data
            self._kept += len(data)

    def _forget_contents(self, rel: str) -> None:
        self._kept -= len(self.stats.contents.pop(rel, b""))

    def _copy_capped(self, src: IO[bytes], fd: int, name: str, rel: str) -> int:
        """Stream in chunks, stopping before the running total of written bytes passes ``max_bytes`` (or the
        file would take the entries past ``footprint_limit``). Returns the file's size; a file written in one
        chunk (all small ones) is kept in ``stats.contents`` when it fits (see ``keep_files_up_to``)."""
        written = 0
        first = b""
        while True:
            try:
                chunk = src.read(CHUNK_SIZE)
            except _CORRUPT_ERRORS as exc:
                raise _corrupt(self.archive, name, exc) from exc
            if not chunk:
                if written == len(first):  # one chunk, or none: an empty file
                    self._keep_contents(rel, first)
                return written
            first = first or chunk
            if self.stats.bytes + len(chunk) > self.max_bytes:
                raise self.too_large_error(name)
            self.check_footprint(written + len(chunk))
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
            written += len(chunk)
            self.stats.bytes += len(chunk)


# --- tar ---------------------------------------------------------------------------------------------------


class _ReadWatcher:
    """File wrapper remembering the last read: tarfile silently stops at a bad or missing end-of-archive."""

    def __init__(self, raw: io.BufferedIOBase) -> None:
        self._raw = raw
        self.last = b""
        self.last_offset = -1

    def read(self, size: int = -1) -> bytes:
        self.last_offset = self._raw.tell()
        self.last = self._raw.read(size)
        return self.last

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()


def _open_decompressed(archive: Path, compression: str | None) -> io.BufferedIOBase:
    if compression is None:
        return open(archive, "rb")
    return _OPENERS[compression](archive, "rb")


def _extract_tar(archive: Path, compression: str | None, writer: _SafeWriter) -> None:
    name = archive.name
    with _open_decompressed(archive, compression) as raw:
        watcher = _ReadWatcher(raw)
        with _as_bad_archive(name):
            # Names are UTF-8 whatever the locale; invalid bytes become surrogate escapes, skipped as bad_name.
            # cast: mode "r" only reads, seeks and tells, all the watcher has (typeshed asks for write and close too)
            fileobj = cast(IO[bytes], watcher)
            tar = tarfile.TarFile(fileobj=fileobj, mode="r", encoding="utf-8", errors="surrogateescape")
        with tar:
            previous = None
            while True:
                try:  # per member: the context manager's own cost shows on archives of 100,000 entries
                    member = tar.next()
                except _CORRUPT_ERRORS as exc:
                    raise _corrupt(name, previous, exc) from exc
                if member is None:
                    break
                _extract_tar_member(tar, member, writer)
                previous = member.name
            _check_tar_end(tar, watcher, name)
        if compression is not None:
            _drain_to_checksum(raw, name)


def _extract_tar_member(tar: tarfile.TarFile, member: tarfile.TarInfo, writer: _SafeWriter) -> None:
    writer.count_member(member.name)
    if member.isdir():
        writer.add_dir(member.name)
    elif member.issym():
        writer.add_symlink(member.name, member.linkname)
    elif member.islnk():
        writer.add_hardlink(member.name, member.linkname)
    elif member.isreg():
        try:
            src = tar.extractfile(member)
        except _CORRUPT_ERRORS as exc:
            raise _corrupt(writer.archive, member.name, exc) from exc
        assert src is not None
        # The declared size is checked before any byte is written; sparse sizes included.
        writer.add_file(member.name, src, member.mode, declared_size=member.size)
    else:  # FIFO, character or block device, or an entry type tarfile does not know
        writer.skip_special(member.name)


def _check_tar_end(tar: tarfile.TarFile, watcher: _ReadWatcher, name: str) -> None:
    """The last header read must be the zero block of the end-of-archive marker, as POSIX requires."""
    if watcher.last_offset == tar.offset and watcher.last == _ZERO_BLOCK:
        return
    if watcher.last_offset == tar.offset and len(watcher.last) == _BLOCK:
        raise ExtractError(f"{name} is corrupt: invalid tar header at byte {tar.offset}", reason=BAD_ARCHIVE)
    raise ExtractError(f"{name} is truncated: it ends without the tar end-of-archive marker", reason=BAD_ARCHIVE)


def _drain_to_checksum(raw: io.BufferedIOBase, name: str) -> None:
    """Read the padding after the tar end so the decompressor reaches and verifies its checksum."""
    drained = 0
    while drained <= _TRAILER_DRAIN_LIMIT:
        with _as_bad_archive(name):
            chunk = raw.read(CHUNK_SIZE)
        if not chunk:
            return
        drained += len(chunk)


# --- zip -----------------------------------------------------------------------------------------------------


def _extract_zip(archive: Path, writer: _SafeWriter) -> None:
    with open(archive, "rb") as raw:
        zf, undecodable = _open_zip(raw, archive.name)
        with zf:
            infos = zf.infolist()
            _check_zip_before_writing(infos, writer)
            for index, info in enumerate(infos):
                _extract_zip_member(zf, info, writer, _zip_member_name(info, index in undecodable))


def _open_zip(raw: BinaryIO, archive: str) -> tuple[zipfile.ZipFile, set[int]]:
    """The zip, and the indexes of its entries whose name is flagged UTF-8 but is not.

    zipfile refuses the whole archive for one such name, so it reads them again with the flag masked, in
    the central directory and in the entry's own header: their bytes then decode as cp437, losslessly, the
    entries read like any other, and the writer skips them alone as ``bad_name``.
    """
    with _as_bad_archive(archive):
        try:
            return zipfile.ZipFile(raw), set()
        except UnicodeDecodeError:
            masks = _undecodable_utf8_flags(raw)
        masker = _FlagMasker(raw, list(masks))
        zf = zipfile.ZipFile(masker)
    undecodable = set(masks.values())
    infos = zf.infolist()
    masker.mask([infos[index].header_offset + _LOCAL_FLAGS_OFFSET for index in undecodable])
    return zf, undecodable


def _zip_member_name(info: zipfile.ZipInfo, undecodable: bool) -> str:
    """The entry's name; a masked one as its raw bytes with the invalid ones surrogate-escaped (as tar does)."""
    if not undecodable:
        return info.filename
    return info.filename.encode("cp437").decode("utf-8", "surrogateescape")


# zipfile's end-record reader and its constants are private, so typeshed leaves them out: reached through Any.
_zipfile_private: Any = zipfile
_CENTRAL_ENTRY = struct.Struct("<4s4xH18x3H12x")  # signature, flags, name/extra/comment lengths: 46 bytes
_CENTRAL_FLAGS_OFFSET = 8
_LOCAL_FLAGS_OFFSET = 6
_CENTRAL_SIGNATURE = b"PK\x01\x02"
_UTF8_FLAG = 0x800


def _undecodable_utf8_flags(raw: BinaryIO) -> dict[int, int]:
    """{file offset of an entry's flags: entry index} for the UTF-8-flagged names that are not UTF-8.

    The central directory is found the way ZipFile finds it (its own end-record reader, private but
    unchanged for decades), so both read the same entries in the same order; anything unexpected gives
    no masks, and the archive stays ``bad_archive`` as before.
    """
    end = _zipfile_private._EndRecData(raw)
    if not end:
        return {}
    size = end[_zipfile_private._ECD_SIZE]
    start = end[_zipfile_private._ECD_LOCATION] - size
    if end[_zipfile_private._ECD_SIGNATURE] == _zipfile_private.stringEndArchive64:  # the zip64 end record
        start -= _zipfile_private.sizeEndCentDir64 + _zipfile_private.sizeEndCentDir64Locator  # and locator between
    if start < 0:
        return {}
    raw.seek(start)
    return _scan_central_directory(raw.read(size), start)


def _scan_central_directory(directory: bytes, start: int) -> dict[int, int]:
    """The masks of :func:`_undecodable_utf8_flags` for a central directory read from file offset ``start``."""
    masks: dict[int, int] = {}
    pos = index = 0
    while pos + _CENTRAL_ENTRY.size <= len(directory):
        signature, flags, name_len, extra_len, comment_len = _CENTRAL_ENTRY.unpack_from(directory, pos)
        if signature != _CENTRAL_SIGNATURE:
            break
        name = directory[pos + _CENTRAL_ENTRY.size : pos + _CENTRAL_ENTRY.size + name_len]
        if flags & _UTF8_FLAG and not _decodes_as_utf8(name):
            masks[start + pos + _CENTRAL_FLAGS_OFFSET] = index
        pos += _CENTRAL_ENTRY.size + name_len + extra_len + comment_len
        index += 1
    return masks


def _decodes_as_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class _FlagMasker:
    """The zip file as zipfile reads it, with the UTF-8 flag cleared in the flags at given offsets (see _open_zip)."""

    def __init__(self, raw: BinaryIO, flag_offsets: list[int]) -> None:
        self._raw = raw
        self._high_bytes: list[int] = []
        self.mask(flag_offsets)

    def mask(self, flag_offsets: list[int]) -> None:
        """Also clear the flag in these 2-byte little-endian flag fields (bit 0x800 is in their second byte)."""
        self._high_bytes = sorted({*self._high_bytes, *(offset + 1 for offset in flag_offsets)})

    def read(self, size: int = -1) -> bytes:
        start = self._raw.tell()
        data = self._raw.read(size)
        first = bisect.bisect_left(self._high_bytes, start)
        end = bisect.bisect_left(self._high_bytes, start + len(data))
        if first == end:
            return data
        out = bytearray(data)
        for position in self._high_bytes[first:end]:
            out[position - start] &= ~(_UTF8_FLAG >> 8) & 0xFF
        return bytes(out)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def seekable(self) -> bool:
        return True


def _zip_unix_mode(info: zipfile.ZipInfo) -> int:
    return info.external_attr >> 16


def _zip_is_dir(info: zipfile.ZipInfo) -> bool:
    return info.is_dir() or stat.S_ISDIR(_zip_unix_mode(info))


def _zip_is_regular(info: zipfile.ZipInfo) -> bool:
    return not _zip_is_dir(info) and stat.S_IFMT(_zip_unix_mode(info)) in (0, stat.S_IFREG)


def _check_zip_before_writing(infos: list[zipfile.ZipInfo], writer: _SafeWriter) -> None:
    """The central directory lists everything: refuse over-limit, encrypted or unreadable zips up front."""
    if len(infos) > writer.max_members:
        raise ExtractError(
            f"{writer.archive} has {len(infos)} entries, more than {writer.max_members} (extract.max_members)",
            reason=TOO_LARGE,
        )
    declared = 0
    for info in infos:
        if info.flag_bits & 0x1:
            raise _bad_entry(writer.archive, info.filename, "it is encrypted (password-protected)")
        if info.compress_type not in _ZIP_METHODS:
            raise _bad_entry(writer.archive, info.filename, f"unsupported compression method {info.compress_type}")
        if _zip_is_regular(info):
            declared += info.file_size
            if declared > writer.max_bytes:
                raise writer.too_large_error(info.filename)


def _extract_zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, writer: _SafeWriter, name: str) -> None:
    writer.count_member(name)
    file_type = stat.S_IFMT(_zip_unix_mode(info))
    if _zip_is_dir(info):
        writer.add_dir(name)
    elif file_type == stat.S_IFLNK:
        writer.add_symlink(name, _read_zip_symlink_target(zf, info, writer.archive))
    elif _zip_is_regular(info):
        try:
            src = zf.open(info)
        except _CORRUPT_ERRORS as exc:
            raise _corrupt(writer.archive, name, exc) from exc
        with src:  # the declared size is checked first (the bytes written remain the guard: zips lie about it)
            writer.add_file(name, src, _zip_unix_mode(info), declared_size=info.file_size)
    else:
        writer.skip_special(name)


def _read_zip_symlink_target(zf: zipfile.ZipFile, info: zipfile.ZipInfo, archive: str) -> str:
    """A zip symlink stores its target as the member's content; read it bounded."""
    with _as_bad_archive(archive, info.filename), zf.open(info) as src:
        data = src.read(MAX_SYMLINK_TARGET + 1)
    return os.fsdecode(data)


# --- where to extract: a RAM-backed folder when the archive fits, else node-local disk ----------------------

RAM_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})
# File systems shared between nodes: never the place for a record's temporary files (docs/cluster-guide.md).
SHARED_FILESYSTEMS = frozenset({"nfs", "nfs4", "lustre", "gpfs", "beegfs", "cifs", "smb3", "ceph", "cephfs",
                                "glusterfs", "fuse.glusterfs", "panfs", "wekafs", "fuse.sshfs", "9p", "afs"})
SHM = Path("/dev/shm")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
ENTRY_OVERHEAD = 1024  # kernel memory per inode and dentry on a tmpfs, roughly (and at least one per entry)
MEMORY_SHARE = 0.5  # at most this share of the memory the job has left holds extracted files
TAR_PAGE_FACTOR = 1.25  # a tar's content rounded up to whole pages, for the typical source file of a few KB
COMPRESSED_TAR_FACTOR = 6  # bzip2/xz: the uncompressed size is not in the file; source code shrinks 4-6x
_UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as a number near 2**63
_MOUNTINFO = "/proc/self/mountinfo"
_CGROUP = "/proc/self/cgroup"
_MEMINFO = "/proc/meminfo"


def _pages(size: int) -> int:
    return -(-size // PAGE_SIZE) * PAGE_SIZE


@dataclass(frozen=True)
class Placement:
    """Where one archive is extracted: a RAM-backed ``root`` with the bytes it may take there, or node-local
    disk (``root`` None). ``why`` says how it was decided, in one line."""

    root: Path | None
    allowance: int
    why: str


def _mounts() -> list[tuple[str, str, str]]:
    """(mount point, file system type, super options) of every mount this process sees, in mount order."""
    try:
        with open(_MOUNTINFO, encoding="utf-8", errors="surrogateescape") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    mounts = []
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if sep and len(fields) >= 5 and rest:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            mounts.append((point, rest[0], rest[2] if len(rest) > 2 else ""))
    return mounts


def filesystem_type(path: str | os.PathLike[str]) -> str | None:
    """The type of the file system holding ``path`` (``tmpfs``, ``ext4``, ``lustre``, ...), from the mount table;
    None when the table cannot be read."""
    real = os.path.realpath(path)
    best, kind = -1, None
    for point, fstype, _ in _mounts():
        if _is_within(real, point) and len(point) >= best:  # the deepest mount; a later one over the same point wins
            best, kind = len(point), fstype
    return kind


def is_ram_backed(path: str | os.PathLike[str]) -> bool:
    return filesystem_type(path) in RAM_FILESYSTEMS


def memory_roots() -> list[Path]:
    """The RAM-backed folders this process may extract into, best first: ``$SLURM_TMPDIR`` and ``$TMPDIR`` when
    they are a tmpfs (a job's own, removed with the job), then ``/dev/shm``. Only writable folders on a tmpfs or
    ramfs qualify, so shared scratch never does."""
    roots: list[Path] = []
    for candidate in (os.environ.get("SLURM_TMPDIR"), os.environ.get("TMPDIR"), str(SHM)):
        if not candidate:
            continue
        path = Path(candidate)
        try:
            usable = path.is_dir() and os.access(path, os.W_OK | os.X_OK) and is_ram_backed(path)
            if usable and all(not os.path.samefile(path, r) for r in roots):
                roots.append(path)
        except OSError:  # vanished while looked at
            continue
    return roots


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged user may still write on ``path``'s file system (0 when it cannot be asked)."""
    try:
        info = os.statvfs(path)
    except OSError:
        return 0
    return info.f_bavail * info.f_frsize


def memory_left() -> int | None:
    """Bytes of memory this job may still take, the least of: every memory cgroup above this process (limit minus
    usage, which counts its tmpfs pages), the SLURM allocation minus this process's resident memory, and the
    machine's available memory. None when none of them can be read."""
    rooms = [*_cgroup_rooms(), _slurm_room(), _available_memory()]
    known = [room for room in rooms if room is not None]
    return max(0, min(known)) if known else None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_rooms() -> list[int]:
    """Limit minus usage of each memory cgroup from this process's up to the root (v2, or v1's memory controller)."""
    try:
        with open(_CGROUP, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    mounts = _mounts()
    rooms = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, relative = rest.partition(":")
        if hierarchy == "0" and not controllers:
            base = next((p for p, t, _ in mounts if t == "cgroup2"), None)
            limit_name, usage_name = "memory.max", "memory.current"
        elif "memory" in controllers.split(","):
            base = next((p for p, t, o in mounts if t == "cgroup" and "memory" in o.split(",")), None)
            limit_name, usage_name = "memory.limit_in_bytes", "memory.usage_in_bytes"
        else:
            continue
        if base is None:
            continue
        parts = [part for part in relative.split("/") if part and part != ".."]
        for depth in range(len(parts), -1, -1):
            folder = Path(base, *parts[:depth])
            limit, usage = _read_int(folder / limit_name), _read_int(folder / usage_name)
            if limit is not None and usage is not None and limit < _UNLIMITED:
                rooms.append(limit - usage)
    return rooms


def _slurm_room() -> int | None:
    """The job's SLURM memory (``--mem``, or ``--mem-per-cpu`` times its CPUs) minus this process's resident memory."""
    per_node, per_cpu = os.environ.get("SLURM_MEM_PER_NODE", ""), os.environ.get("SLURM_MEM_PER_CPU", "")
    cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if per_node.isdigit():
        allocated = int(per_node) << 20
    elif per_cpu.isdigit():
        allocated = (int(per_cpu) << 20) * (int(cpus) if cpus.isdigit() else 1)
    else:
        return None
    try:
        with open("/proc/self/statm") as handle:
            resident = int(handle.read().split()[1]) * PAGE_SIZE
    except (OSError, ValueError, IndexError):
        resident = 0
    return allocated - resident


def _available_memory() -> int | None:
    try:
        with open(_MEMINFO) as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def expected_footprint(archive: Path) -> int | None:
    """What extracting ``archive`` is expected to take on a tmpfs, without extracting it; None when unknown.

    A zip's central directory lists every entry and its size: exact (files in whole pages, plus
    ENTRY_OVERHEAD per entry). A tar lists its members only along the way: a plain tar's size, gzip's
    trailer (the uncompressed size modulo 4 GiB, used when it is no smaller than the file), else the
    compressed size times COMPRESSED_TAR_FACTOR; with TAR_PAGE_FACTOR for whole pages. The extraction
    itself counts what it really takes (``footprint_limit``), so an estimate only saves a wasted try.
    """
    try:
        kind, compression = _sniff(archive)
        size = archive.stat().st_size
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                infos = zf.infolist()
            return sum(_pages(i.file_size) for i in infos if _zip_is_regular(i)) + len(infos) * ENTRY_OVERHEAD
        if compression is None:
            content = size
        elif compression == "gzip":
            with open(archive, "rb") as handle:
                handle.seek(-4, os.SEEK_END)
                trailer = struct.unpack("<I", handle.read(4))[0]
            content = trailer if trailer >= size else size * COMPRESSED_TAR_FACTOR
        else:
            content = size * COMPRESSED_TAR_FACTOR
    except (ExtractError, *_CORRUPT_ERRORS):
        return None
    return int(content * TAR_PAGE_FACTOR)


def choose_memory_root(archive: Path, budget: int, *, roots: list[Path] | None = None,
                       memory: int | None = None) -> Placement:
    """Where to extract ``archive``: the first RAM-backed folder (:func:`memory_roots`) where its expected size
    fits ``budget`` bytes, the folder's free space and MEMORY_SHARE of the memory the job has left
    (:func:`memory_left`); else node-local disk. ``roots`` and ``memory`` replace what this machine says."""
    if budget <= 0:
        return Placement(None, 0, "on disk: no RAM budget left (extract.memory_budget_mb)")
    roots = memory_roots() if roots is None else roots
    if not roots:
        return Placement(None, 0, "no writable RAM-backed folder (tmpfs) here")
    left = memory_left() if memory is None else memory
    by_memory = budget if left is None else int(left * MEMORY_SHARE)
    need = expected_footprint(Path(archive))
    shown = "unknown" if need is None else f"{need / 1e6:.1f} MB"
    why = ""
    for root in roots:
        allowance = min(budget, by_memory, free_bytes(root))
        if need is None or need <= allowance:
            return Placement(root, allowance, f"in RAM ({root}): needs {shown}, may take {allowance / 1e6:.1f} MB")
        why = why or (f"on disk: needs {shown}, more than RAM allows ({budget / 1e6:.1f} MB of budget, "
                      f"{by_memory / 1e6:.1f} MB of memory, {free_bytes(root) / 1e6:.1f} MB free in {root})")
    return Placement(None, 0, why)
