"""Which files of an extracted record are rasterized (SPEC section 4), and the record's file tree.

The walk never follows a symlink, never opens anything but a regular file, and turns every per-file
problem into a recorded skip reason, so one bad file never stops a record.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GIT_DIR = ".git"
BINARY_SNIFF_BYTES = 8000
_HASH_CHUNK = 1 << 20

# Skip reasons recorded in the tree (``error: <message>`` is the catch-all).
TOO_LARGE = "too_large"
BINARY = "binary"
SYMLINK = "symlink"
UNREADABLE = "unreadable"
NOT_REGULAR = "not_regular"


@dataclass
class WalkedFile:
    """One non-directory entry of the tree, with its content when it is to be rasterized."""

    key: str
    kind: str  # "file", "symlink" or "other"
    size: int | None = None
    sha256: str | None = None
    data: bytes | None = None  # set exactly when the file is to be rasterized
    skipped: str | None = None
    target: str | None = None  # a symlink's target, as written in the link


def is_excluded(name: str) -> bool:
    """A path component exactly ``.git`` is excluded (``.gitignore`` and ``.github`` are not)."""
    return name == GIT_DIR


def list_entries(
    root: Path, prefix: str = ""
) -> tuple[list[tuple[str, str | None]], list[tuple[str, Path, os.stat_result]]]:
    """All directories and all other entries under ``root``, each list sorted by key.

    Keys are POSIX paths relative to ``root``, each preceded by ``prefix``. A directory comes with the
    reason it could not be listed (``unreadable``, ``error: ...``), or ``None``.
    """
    dirs: list[tuple[str, str | None]] = []
    others: list[tuple[str, Path, os.stat_result]] = []
    pending = [(root, prefix)]
    while pending:
        folder, key_prefix = pending.pop()
        try:
            with os.scandir(folder) as it:
                found = [(entry.name, entry.path, entry.stat(follow_symlinks=False)) for entry in it]
        except PermissionError:
            dirs.append((key_prefix.rstrip("/"), UNREADABLE))
            continue
        except OSError as exc:
            dirs.append((key_prefix.rstrip("/"), f"error: {_describe(exc)}"))
            continue
        for name, path, info in found:
            if is_excluded(name):
                continue
            key = key_prefix + name
            if stat.S_ISDIR(info.st_mode):
                pending.append((Path(path), key + "/"))
            else:
                others.append((key, Path(path), info))
        if key_prefix:
            dirs.append((key_prefix.rstrip("/"), None))
    return sorted(dirs), sorted(others, key=lambda item: item[0])


def walk(
    root: Path, *, max_file_bytes: int = 100_000, skip_binary: bool = True, prefix: str = ""
) -> Iterator[WalkedFile]:
    """Every file, symlink and special entry under ``root``, in sorted key order, classified.

    A regular file of at most ``max_file_bytes`` bytes that is not binary comes with its ``data``;
    everything else comes with a ``skipped`` reason. Directories are not yielded (see :func:`list_entries`).
    """
    _, others = list_entries(root, prefix)
    for key, path, info in others:
        yield classify(key, path, info, max_file_bytes=max_file_bytes, skip_binary=skip_binary)


def classify(
    key: str, path: Path, info: os.stat_result, *, max_file_bytes: int, skip_binary: bool
) -> WalkedFile:
    """Decide what happens to one entry, reading a regular file at most once."""
    if stat.S_ISLNK(info.st_mode):
        try:
            target = os.readlink(path)
        except OSError as exc:
            return WalkedFile(key, "symlink", skipped=f"error: {_describe(exc)}")
        return WalkedFile(key, "symlink", target=target, skipped=SYMLINK)
    if not stat.S_ISREG(info.st_mode):
        return WalkedFile(key, "other", skipped=NOT_REGULAR)
    try:
        return _read_regular_file(key, path, max_file_bytes=max_file_bytes, skip_binary=skip_binary)
    except PermissionError:
        return WalkedFile(key, "file", size=info.st_size, skipped=UNREADABLE)
    except OSError as exc:
        return WalkedFile(key, "file", size=info.st_size, skipped=f"error: {_describe(exc)}")


def _read_regular_file(key: str, path: Path, *, max_file_bytes: int, skip_binary: bool) -> WalkedFile:
    # O_NOFOLLOW: the entry was a regular file when listed; never follow a link swapped in since.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > max_file_bytes:
            return WalkedFile(key, "file", size=size, sha256=_hash_stream(handle), skipped=TOO_LARGE)
        data = handle.read(max_file_bytes + 1)
    size = len(data)
    digest = hashlib.sha256(data).hexdigest()
    if size > max_file_bytes:  # grew while we looked
        return WalkedFile(key, "file", size=size, sha256=digest, skipped=TOO_LARGE)
    if skip_binary and is_binary(data):
        return WalkedFile(key, "file", size=size, sha256=digest, skipped=BINARY)
    return WalkedFile(key, "file", size=size, sha256=digest, data=data)


def is_binary(data: bytes) -> bool:
    """A NUL byte in the first 8,000 bytes (git's rule) marks a file as binary."""
    return b"\x00" in data[:BINARY_SNIFF_BYTES]


def _hash_stream(handle: Any) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
        digest.update(chunk)
    return digest.hexdigest()


def _describe(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


# --- the file-hierarchy tree -------------------------------------------------------------------------


def new_tree() -> dict[str, Any]:
    return {"type": "dir", "children": {}}


def add_dir(tree: dict[str, Any], key: str) -> dict[str, Any]:
    """The directory node for ``key`` (``a/b``), created with its parents when missing."""
    node = tree
    for part in key.split("/"):
        if not part:
            continue
        node = node["children"].setdefault(part, new_tree())
    return node


def add_file(tree: dict[str, Any], key: str, node: dict[str, Any]) -> None:
    parent, _, name = key.rpartition("/")
    add_dir(tree, parent)["children"][name] = node


def file_node(entry: WalkedFile, segments: int | None = None) -> dict[str, Any]:
    """The tree node of one entry: size, sha256 and a segment count, or the skip reason."""
    node: dict[str, Any] = {"type": entry.kind}
    if entry.size is not None:
        node["size"] = entry.size
    if entry.sha256 is not None:
        node["sha256"] = entry.sha256
    if entry.target is not None:
        node["target"] = entry.target
    if entry.skipped is not None:
        node["skipped"] = entry.skipped
    else:
        node["segments"] = segments if segments is not None else 0
    return node


def sort_tree(tree: dict[str, Any]) -> dict[str, Any]:
    """The same tree with every ``children`` mapping in sorted name order (stable JSON and pickles)."""
    if "children" not in tree:
        return tree
    out = {k: v for k, v in tree.items() if k != "children"}
    out["children"] = {name: sort_tree(tree["children"][name]) for name in sorted(tree["children"])}
    return out


def iter_tree_files(tree: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, node) for every non-directory node, in sorted key order of each level."""
    for name, node in tree.get("children", {}).items():
        key = f"{prefix}{name}"
        if node.get("type") == "dir":
            yield from iter_tree_files(node, key + "/")
        else:
            yield key, node
