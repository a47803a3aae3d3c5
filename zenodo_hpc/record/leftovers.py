"""Temporary folders left behind by killed workers, removed by the next worker, but only when their owner is dead.

A worker killed by ``SIGKILL``, the OOM killer or a node crash cannot clean up after itself: its node-local
folder (``zenodo-hpc-<id>-*`` under ``$SLURM_TMPDIR``/``$TMPDIR``, downloads and extracted archives), its folder
in RAM (``zenodo-hpc-<id>-*`` under ``/dev/shm`` or another tmpfs, extracted archives: memory the node does not
get back until it is removed) and a record's staging folder (``data/.<id>.partial-*``, half a record) stay.
Another worker on the same node may be using folders of the same names right now, so a folder is removed only
when its owner is known to be gone (zenodo_hpc/core/liveness.py): the owner file inside a node-local folder names its
process; a staging folder belongs to the worker that started the record last (its attempt line), and to nobody
once the record is done.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from ..core.liveness import identity, is_dead, read_owner
from ..core.state import RunDir, is_done, last_attempt_owner
from .extract import memory_roots

log = logging.getLogger(__name__)

TMP_PREFIX = "zenodo-hpc-"
OWNER_FILE = ".zenodo-hpc-owner.json"
_STAGING = re.compile(r"\.(?P<id>[A-Za-z0-9_][A-Za-z0-9._-]{0,127})\.partial-[^/]+")


@contextlib.contextmanager
def record_tmp(record_id: str, root: Path) -> Iterator[Path]:
    """A node-local temporary folder for one attempt at a record, removed afterwards. Its owner file names this
    process, so that if it is killed the next worker on this node removes the folder, and no other one does."""
    with tempfile.TemporaryDirectory(prefix=f"{TMP_PREFIX}{record_id}-", dir=root) as tmp:
        (Path(tmp) / OWNER_FILE).write_text(json.dumps(identity()), encoding="utf-8")
        try:
            yield Path(tmp)
        finally:
            _empty_but_the_owner(Path(tmp))


def _empty_but_the_owner(folder: Path) -> None:
    """Remove what is in ``folder`` but its owner file, which goes last (with the folder): a worker stopped while it
    cleans up (Ctrl-C, then the driver's SIGTERM) leaves a folder that still names it, for the next one to remove."""
    for entry in _entries(folder):
        if entry.name == OWNER_FILE:
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


ORPHAN_GRACE_S = 60  # an empty folder without an owner file this old is no worker's that is still naming itself


def clean_dead_tmp(root: Path) -> list[str]:
    """Remove the ``zenodo-hpc-*`` folders under ``root`` whose owner is gone, and the empty ones without an owner
    file older than a minute (a worker stopped between making the folder and naming itself in it, or between
    removing its owner file and the folder); those of live or unknown owners stay, and so do folders of older
    versions (no owner file, not empty) and those being made this instant."""
    removed = []
    for entry in _entries(root):
        mine = entry.name.startswith(TMP_PREFIX) and entry.is_dir(follow_symlinks=False)
        if mine and (is_dead(read_owner(Path(entry.path) / OWNER_FILE)) or _empty_orphan(entry)):
            removed += _remove(entry.path)
    return removed


def _empty_orphan(entry: os.DirEntry[str]) -> bool:
    try:
        with os.scandir(entry.path) as inside:
            if next(inside, None) is not None:
                return False
        return time.time() - entry.stat().st_mtime > ORPHAN_GRACE_S
    except OSError:  # not ours to look into
        return False


def clean_dead_staging(run: RunDir) -> list[str]:
    """Remove the staging folders ``data/.<id>.partial-*`` that nobody writes any more: the record is done, or
    the worker that started it last is gone from this host."""
    removed = []
    for entry in _entries(run.data):
        match = _STAGING.fullmatch(entry.name)
        if match and entry.is_dir(follow_symlinks=False):
            record_id = match.group("id")
            if is_done(run, record_id) or is_dead(last_attempt_owner(run, record_id)):
                removed += _remove(entry.path)
    return removed


def clean_leftovers(run: RunDir, tmp_root: Path) -> None:
    """What a worker does first: remove what killed workers left, on this node (``tmp_root`` and every RAM-backed
    folder a record may be extracted into) and in the run directory."""
    removed = []
    for root in _distinct([tmp_root, *memory_roots()]):
        removed += clean_dead_tmp(root)
    removed += clean_dead_staging(run)
    if removed:
        log.info("removed %d folder(s) left by killed workers: %s", len(removed), ", ".join(removed[:5]))


def _distinct(roots: list[Path]) -> list[Path]:
    """The folders, each once (``$TMPDIR`` may be ``/dev/shm``)."""
    seen: set[str] = set()
    out = []
    for root in roots:
        real = os.path.realpath(root)
        if real not in seen:
            seen.add(real)
            out.append(root)
    return out


def _remove(path: str) -> list[str]:
    """Remove a folder; ``[path]`` when it is gone (another user's may not be ours to remove)."""
    shutil.rmtree(path, ignore_errors=True)
    return [] if os.path.lexists(path) else [path]


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []
