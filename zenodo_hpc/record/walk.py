"""Which files of an extracted record are rasterized, and the record's file tree (the rules: docs/formats.md,
"Code images"; a record's sources: docs/fetch.md).

The walk never follows a symlink, never opens anything but a regular file, and turns every per-file
problem into a recorded skip reason, so one bad file never stops a record. Names that are not UTF-8 and
folders deeper than ``MAX_DEPTH`` are recorded, not walked; the tree functions use no recursion, and the
tree never grows deeper than ``MAX_TREE_DEPTH``, so its JSON and pickle stay within Python's limits.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .extract import BAD_NAME, MAX_DEPTH, TOO_DEEP, is_utf8_text, printable_name

GIT_DIR = ".git"
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
BINARY_SNIFF_BYTES = 8000
_HASH_CHUNK = 1 << 20

# Skip reasons recorded in the tree (``error: <message>`` is the catch-all).
TOO_LARGE = "too_large"
BINARY = "binary"
SYMLINK = "symlink"
UNREADABLE = "unreadable"
NOT_REGULAR = "not_regular"
DUPLICATE_PATH = "duplicate_path"  # the key, or a folder above it, is already taken in the tree

MAX_TREE_DEPTH = MAX_DEPTH + 2  # room for the key prefixes a record adds (an archive's or a folder's name)


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


EntryInfo = os.stat_result | OSError  # an entry's lstat, or why it failed


def list_entries(
    root: str | os.PathLike[str], prefix: str = ""
) -> tuple[list[tuple[str, str | None]], list[tuple[str, str, EntryInfo]]]:
    """All directories and all other entries under ``root``, each list sorted by key.

    Keys are POSIX paths relative to ``root``, each preceded by ``prefix``. A directory comes with the
    reason it was not walked (``unreadable``, ``bad_name``, ``too_deep``, ``error: ...``), or ``None``;
    directory keys are printable. Other entries keep their names as read (see :func:`classify`), with their
    path (a string: a record may hold 100,000 of them) and their lstat.
    """
    dirs: list[tuple[str, str | None]] = []
    others: list[tuple[str, str, EntryInfo]] = []
    pending: list[tuple[str | os.PathLike[str], str, int]] = [(root, prefix, 0)]
    while pending:
        folder, key_prefix, depth = pending.pop()
        found, problem = _scan(folder)
        if problem is None and found and depth >= MAX_DEPTH:
            problem = TOO_DEEP  # what it holds would be deeper than MAX_DEPTH
        if problem is not None or key_prefix:
            dirs.append((printable_name(key_prefix.rstrip("/")), problem))
        if problem is not None:
            continue
        for name, path, info in found:
            key = key_prefix + name
            if isinstance(info, OSError) or not stat.S_ISDIR(info.st_mode):
                others.append((key, path, info))
            elif not is_utf8_text(name):
                dirs.append((printable_name(key), BAD_NAME))
            else:
                pending.append((path, key + "/", depth + 1))
    return sorted(dirs), sorted(others, key=lambda item: item[0])


def _scan(folder: str | os.PathLike[str]) -> tuple[list[tuple[str, str, EntryInfo]], str | None]:
    """(name, path, lstat or its error) of every entry of ``folder`` but ``.git``, or why it cannot be listed."""
    found: list[tuple[str, str, EntryInfo]] = []
    try:
        with os.scandir(folder) as it:
            for entry in it:
                if not is_excluded(entry.name):
                    found.append((entry.name, entry.path, _lstat(entry)))
    except PermissionError:
        return [], UNREADABLE
    except OSError as exc:
        return [], f"error: {_describe(exc)}"
    return found, None


def _lstat(entry: os.DirEntry[str]) -> EntryInfo:
    """One entry's lstat; its error stays with that entry (recorded as its skip reason), not its folder."""
    try:
        return entry.stat(follow_symlinks=False)
    except OSError as exc:
        return exc


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


def classify(key: str, path: str | os.PathLike[str], info: EntryInfo, *, max_file_bytes: int,
             skip_binary: bool, known: bytes | None = None) -> WalkedFile:
    """Decide what happens to one entry, reading a regular file at most once (not at all when its bytes are
    ``known``: what the extraction wrote into it, of the size listed).

    A key that is not UTF-8 (a name made elsewhere) is skipped as ``bad_name`` under its printable form:
    the outputs could not hold it, and one odd name must not stop the record.
    """
    if isinstance(info, OSError):
        return WalkedFile(printable_name(key), "other", skipped=f"error: {_describe(info)}")
    if not is_utf8_text(key):
        return WalkedFile(printable_name(key), _kind(info), skipped=BAD_NAME)
    if stat.S_ISLNK(info.st_mode):
        try:
            target = os.readlink(path)
        except OSError as exc:
            return WalkedFile(key, "symlink", skipped=f"error: {_describe(exc)}")
        return WalkedFile(key, "symlink", target=printable_name(target), skipped=SYMLINK)
    if not stat.S_ISREG(info.st_mode):
        return WalkedFile(key, "other", skipped=NOT_REGULAR)
    if known is not None and len(known) == info.st_size:
        return _judge(key, known, max_file_bytes=max_file_bytes, skip_binary=skip_binary)
    try:
        return _read_regular_file(key, path, max_file_bytes=max_file_bytes, skip_binary=skip_binary)
    except PermissionError:
        return WalkedFile(key, "file", size=info.st_size, skipped=UNREADABLE)
    except OSError as exc:
        return WalkedFile(key, "file", size=info.st_size, skipped=f"error: {_describe(exc)}")


def _kind(info: os.stat_result) -> str:
    if stat.S_ISLNK(info.st_mode):
        return "symlink"
    return "file" if stat.S_ISREG(info.st_mode) else "other"


def _read_regular_file(key: str, path: str | os.PathLike[str], *, max_file_bytes: int,
                       skip_binary: bool) -> WalkedFile:
    # O_NOFOLLOW: the entry was a regular file when listed; never follow a link swapped in since.
    fd = os.open(path, _READ_FLAGS)
    try:
        size = os.fstat(fd).st_size
        if size > max_file_bytes:
            return WalkedFile(key, "file", size=size, sha256=_hash_fd(fd), skipped=TOO_LARGE)
        data = _read_at_most(fd, max_file_bytes + 1)
    finally:
        os.close(fd)
    return _judge(key, data, max_file_bytes=max_file_bytes, skip_binary=skip_binary)


def _judge(key: str, data: bytes, *, max_file_bytes: int, skip_binary: bool) -> WalkedFile:
    """A regular file from its bytes (at most ``max_file_bytes + 1`` of them): its hash, and rasterized or why not."""
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


def _read_at_most(fd: int, limit: int) -> bytes:
    """The file's first ``limit`` bytes, or all of it when it is shorter (read to its end)."""
    parts, left = [], limit
    while left > 0:
        chunk = os.read(fd, left)
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _hash_fd(fd: int) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: os.read(fd, _HASH_CHUNK), b""):
        digest.update(chunk)
    return digest.hexdigest()


def _describe(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


# --- the file-hierarchy tree -------------------------------------------------------------------------


def new_tree() -> dict[str, Any]:
    return {"type": "dir", "children": {}}


def add_dir(tree: dict[str, Any], key: str) -> dict[str, Any] | None:
    """The directory node for ``key`` (``a/b``), created with its parents when missing.

    None, changing nothing, when ``key`` or a folder above it is already a file node (the same path
    from two sources): the caller records that as ``duplicate_path``.
    """
    return _dir_node(tree, tree_parts(key))


def add_file(tree: dict[str, Any], key: str, node: dict[str, Any]) -> bool:
    """Put ``node`` at ``key``, with its folders; False, changing nothing, when the path is taken.

    The path is taken when ``key`` already has a node or a folder above it is a file node: the first
    one stays, and the caller records the second as ``duplicate_path``.
    """
    parts = tree_parts(key)
    if not path_is_free(tree, key):
        return False
    parent = _dir_node(tree, parts[:-1])
    assert parent is not None  # path_is_free checked every existing node above
    parent["children"][parts[-1]] = node
    return True


def path_is_free(tree: dict[str, Any], key: str) -> bool:
    """Whether :func:`add_file` would place a node at ``key``: check before doing costly work for it."""
    parts = tree_parts(key)
    if not parts:
        return False
    node = tree
    for part in parts[:-1]:
        node = node["children"].get(part)
        if node is None:
            return True
        if node.get("type") != "dir":
            return False
    return parts[-1] not in node["children"]


def claim_path(tree: dict[str, Any], key: str) -> tuple[dict[str, Any], str] | None:
    """Where :func:`add_file` would put ``key``'s node, its folders made: (folder node, name), or None, changing
    nothing, when the path is taken. One walk down the tree, for the caller to check before costly work and
    then set ``folder["children"][name]``."""
    parts = tree_parts(key)
    if not parts:
        return None
    node = tree
    for depth, part in enumerate(parts[:-1]):
        child = node["children"].get(part)
        if child is None:  # nothing below exists yet: the path is free
            parent = _dir_node(node, parts[depth:-1])
            assert parent is not None
            return parent, parts[-1]
        if child.get("type") != "dir":
            return None
        node = child
    return None if parts[-1] in node["children"] else (node, parts[-1])


def tree_parts(key: str) -> list[str]:
    """The node names along ``key``; past MAX_TREE_DEPTH the rest of the key stays together as one name.

    So no key, however deep, makes the tree deeper than the JSON and pickle writers can recurse.
    """
    parts = [part for part in key.split("/") if part]
    if len(parts) > MAX_TREE_DEPTH:
        parts[MAX_TREE_DEPTH - 1 :] = ["/".join(parts[MAX_TREE_DEPTH - 1 :])]
    return parts


def _dir_node(tree: dict[str, Any], parts: list[str]) -> dict[str, Any] | None:
    """The folder node along ``parts``, created when missing; None when an existing node there is no folder."""
    node = tree
    for part in parts:
        child = node["children"].get(part)
        if child is None:
            child = node["children"][part] = new_tree()
        elif child.get("type") != "dir":
            return None
        node = child
    return node


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
    """The same tree with every ``children`` mapping in sorted name order (stable JSON and pickles).

    Iterative, like every tree function here: a tree may be deeper than Python's recursion limit.
    """
    out = _without_children(tree)
    pending = [(tree, out)]
    while pending:
        node, copy = pending.pop()
        if "children" not in node:
            continue
        children = node["children"]
        copy["children"] = {}
        for name in sorted(children):
            child = copy["children"][name] = _without_children(children[name])
            pending.append((children[name], child))
    return out


def _without_children(node: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in node.items() if k != "children"}


def iter_tree_files(tree: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, node) for every non-directory node, in sorted key order of each level (depth first, iterative)."""
    pending = [_keyed_children(tree, prefix)]
    while pending:
        item = next(pending[-1], None)
        if item is None:
            pending.pop()
            continue
        key, node = item
        if node.get("type") == "dir":
            pending.append(_keyed_children(node, key + "/"))
        else:
            yield key, node


def _keyed_children(node: dict[str, Any], prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
    return ((prefix + name, child) for name, child in node.get("children", {}).items())
