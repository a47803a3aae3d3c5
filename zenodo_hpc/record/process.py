"""One archive (or folder) -> one record folder: extract, walk, rasterize, write.

This is the unit of work a shard worker runs for each record after fetching it, and what the
``zenodo-hpc process`` command runs on a local file with no cluster involved.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .. import __version__
from ..core.config import Config, ExtractConfig, RasterConfig
from ..core.errors import UserError
from .extract import ARCHIVE_SUFFIXES, ExtractStats, OverFootprint, choose_memory_root, extract_archive
from .leftovers import record_tmp
from .raster import rasterize_many, rasterize_narrow
from .secrets import mask_secrets
from .store import WrittenRecord, check_record_id, write_record
from .walk import (
    DUPLICATE_PATH,
    WalkedFile,
    add_dir,
    claim_path,
    classify,
    file_node,
    list_entries,
    new_tree,
    sort_tree,
)

log = logging.getLogger(__name__)

# Our own space running out where an archive is extracted in RAM: it is extracted on node-local disk instead.
_RAM_FULL = {errno.ENOSPC, errno.EDQUOT, errno.ENOMEM}
BATCH_BYTES = 1 << 20  # text rasterized in one batch (:class:`_PendingImages`); 256 kB was as fast, 1 MB a bit more


@dataclass
class RecordStats:
    """What a record's walk saw; deterministic (no timings), so it can go into the metadata files."""

    files: int = 0
    rasterized: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    segments: int = 0
    bytes_rasterized: int = 0
    masked: int = 0  # credentials masked (docs/formats.md, "Credentials")

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "rasterized": self.rasterized,
            "skipped": dict(sorted(self.skipped.items())),
            "segments": self.segments,
            "bytes_rasterized": self.bytes_rasterized,
            "masked": self.masked,
        }


@dataclass
class RasterizedRecord:
    images: dict[str, np.ndarray]
    tree: dict[str, Any]
    stats: RecordStats
    masked: list[dict[str, Any]] = field(default_factory=list)  # {kind, file, line} of each credential masked
    # each rasterized file's published bytes (credentials masked), the keys of ``images``: the h5 stores them
    texts: dict[str, bytes] = field(default_factory=dict)


@dataclass
class ProcessResult:
    record_id: str
    written: WrittenRecord
    stats: RecordStats
    seconds: float


def skip_category(reason: str) -> str:
    """``error: Permission denied`` counts as ``error`` in the stats; the tree keeps the whole text."""
    return reason.split(":", 1)[0]


class WalkRoot(NamedTuple):
    """A folder to walk, the prefix of its keys, and what extracting it skipped (``None`` for a folder)."""

    folder: Path
    prefix: str
    extracted: ExtractStats | None = None


def rasterize_tree(roots: Iterable[WalkRoot | tuple[Path, str]], raster: RasterConfig) -> RasterizedRecord:
    """Walk each (folder, key prefix) root and rasterize what the walk keeps, building one tree.

    Archive members that extraction skipped for their name are listed in the tree with their reason.
    """
    tree = new_tree()
    stats = RecordStats()
    skipped: Counter[str] = Counter()
    pending = _PendingImages(raster, {}, stats, skipped, [], {})
    for folder, prefix, extracted in (WalkRoot(*root) for root in roots):
        dirs, others = list_entries(folder, prefix)  # one listing: the folders, then every other entry
        for key, reason in dirs:
            node = add_dir(tree, key)  # None under a file of another source: its files count as duplicates
            if node is not None and reason:
                node["skipped"] = reason
                skipped[skip_category(reason)] += 1
        kept = extracted.contents if extracted is not None else {}  # small files' bytes, as extracted
        for key, path, info in others:  # what walk() yields, without listing the folder a second time
            entry = classify(key, path, info, max_file_bytes=raster.max_file_bytes, skip_binary=raster.skip_binary,
                             known=kept.pop(key[len(prefix):], None))
            _take_entry(entry, tree, pending)
        kept.clear()
        if extracted is not None:
            _take_extraction_skips(extracted, prefix, tree, pending)
    pending.flush()
    stats.skipped = dict(skipped)
    return RasterizedRecord(images=pending.images, tree=sort_tree(tree), stats=stats, masked=pending.masked,
                            texts=pending.texts)


class _PendingImages:
    """Files kept for rasterizing, rasterized together once BATCH_BYTES of them wait (and at the end of a
    record) by :func:`rasterize_many`, then their images stored and their tree nodes and stats completed.

    Per file, numpy's fixed cost is most of a small file's rasterizing; a batch pays it once. Holding at
    most BATCH_BYTES of text waiting, batching changes a record's memory by little.

    Each file's credentials are masked first (:func:`~zenodo_hpc.record.secrets.mask_secrets`), so that no
    image holds one; ``masked`` collects where they were (kind, file, line: never the value). ``texts`` keeps
    each rasterized file's masked bytes for the h5 (the images drop characters past the width: the text cannot be
    made again from them); they take the record's rasterized bytes (``stats.bytes_rasterized``, give or take what
    masking changes), held until the record is written, as its images are."""

    def __init__(self, raster: RasterConfig, images: dict[str, np.ndarray], stats: RecordStats,
                 skipped: Counter[str], masked: list[dict[str, Any]], texts: dict[str, bytes]) -> None:
        self.raster, self.images, self.stats, self.skipped, self.masked = raster, images, stats, skipped, masked
        self.texts = texts
        self._files: list[tuple[WalkedFile, dict[str, Any]]] = []
        self._bytes = 0

    def add(self, entry: WalkedFile, node: dict[str, Any]) -> None:
        assert entry.data is not None
        self._files.append((entry, node))
        self._bytes += len(entry.data)
        if self._bytes >= BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        waiting, self._files, self._bytes = self._files, [], 0
        files = [(entry, node, text) for entry, node in waiting if (text := self._masked(entry, node)) is not None]
        if not files:
            return
        geometry = self.raster.layout()
        try:
            arrays: list[np.ndarray | None] = list(rasterize_many([text for _, _, text in files], **geometry))
        except Exception:  # find the file at fault: one file's error never stops the record
            arrays = [None] * len(files)
        for (entry, node, text), array in zip(files, arrays, strict=True):
            if array is None:
                try:
                    array = rasterize_narrow(text, **geometry)
                except Exception as exc:
                    del node["segments"]
                    node["skipped"] = f"error: {type(exc).__name__}: {exc}"
                    self.skipped[skip_category(node["skipped"])] += 1
                    continue
            self.images[entry.key] = array
            self.texts[entry.key] = text
            node["segments"] = int(array.shape[0])
            self.stats.rasterized += 1
            self.stats.segments += int(array.shape[0])
            self.stats.bytes_rasterized += entry.size or 0

    def _masked(self, entry: WalkedFile, node: dict[str, Any]) -> bytes | None:
        """The file's text with its credentials masked, or None (and the file skipped) if masking failed: a file
        is never rasterized unmasked. A masked file's node gets ``masked`` (how many) and the ``size`` and
        ``sha256`` of the masked text: the original's sha256 would let a short password be found by trying
        every candidate against it, the rest of the text being known."""
        try:
            text, findings = mask_secrets(entry.data or b"", entry.key)
        except Exception as exc:  # the type only: a message could quote the line it failed on
            node.pop("segments", None)
            node["skipped"] = f"error: masking credentials failed ({type(exc).__name__})"
            self.skipped[skip_category(node["skipped"])] += 1
            return None
        if findings:
            places = list(dict.fromkeys((f.kind, f.line) for f in findings))
            self.masked += [{"kind": kind, "file": entry.key, "line": line} for kind, line in places]
            self.stats.masked += len(places)
            node["size"], node["sha256"] = len(text), hashlib.sha256(text).hexdigest()
            node["masked"] = len(places)
        return text


def _take_entry(entry: WalkedFile, tree: dict[str, Any], pending: _PendingImages) -> None:
    """Put one walked file in the tree: its node now, its images (and segment count) when its batch is rasterized,
    or the reason it is skipped.

    A key already taken in the tree (or below a file node) keeps its first entry: the later one is only
    counted as ``duplicate_path``, and neither its image nor its node replaces the first.
    """
    pending.stats.files += 1
    slot = claim_path(tree, entry.key)
    if slot is None:
        pending.skipped[DUPLICATE_PATH] += 1
        return
    if entry.skipped:
        pending.skipped[skip_category(entry.skipped)] += 1
    folder, name = slot
    node = folder["children"][name] = file_node(entry)
    if entry.data is not None and not entry.skipped:
        pending.add(entry, node)


def _take_extraction_skips(extracted: ExtractStats, prefix: str, tree: dict[str, Any],
                           pending: _PendingImages) -> None:
    """List the members extraction skipped (odd names) as skipped files; count those it only counted."""
    for key, reason in extracted.skipped:
        _take_entry(WalkedFile(prefix + key, "file", skipped=reason), tree, pending)
    for reason, count in extracted.skipped_unlisted.items():
        pending.stats.files += count
        pending.skipped[reason] += count


def add_loose_files(record: RasterizedRecord, loose: Iterable[tuple[str, Path]],
                    left_out: Iterable[tuple[str, str]], raster: RasterConfig) -> RasterizedRecord:
    """Add a record's loose files (key, downloaded file) and the files left out (key, reason) to its tree.

    A loose file is judged like an extracted one (size, NUL bytes) under its own key; a file that was not
    downloaded (a known binary type, too large, a failed download) is listed with its reason.
    """
    tree, stats = record.tree, record.stats
    skipped: Counter[str] = Counter(stats.skipped)
    pending = _PendingImages(raster, record.images, stats, skipped, record.masked, record.texts)
    for key, path in loose:
        try:
            info = os.lstat(path)
        except OSError as exc:
            entry = WalkedFile(key, "file", skipped=f"error: {exc.strerror or type(exc).__name__}")
        else:
            entry = classify(key, path, info, max_file_bytes=raster.max_file_bytes, skip_binary=raster.skip_binary)
        _take_entry(entry, tree, pending)
    for key, reason in left_out:
        _take_entry(WalkedFile(key, "file", skipped=reason), tree, pending)
    pending.flush()
    stats.skipped = dict(skipped)
    return RasterizedRecord(images=record.images, tree=sort_tree(tree), stats=stats, masked=record.masked,
                            texts=record.texts)


def tool_info(cfg: Config) -> dict[str, str]:
    return {"name": "zenodo-hpc", "version": __version__, "config_sha256": cfg.sha256()}


def local_source_info(path: Path) -> dict[str, Any]:
    """The ``source`` of a record made from a local file: its name and md5 (no URL, nothing checked)."""
    info: dict[str, Any] = {"kind": "local", "url": None, "name": path.name}
    if path.is_file():
        digest = hashlib.md5()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        info["md5"] = digest.hexdigest()
    info["checksum"] = "not_checked"
    return info


def default_record_id(path: Path) -> str:
    """``MUSE-1.0.tar.gz`` -> ``MUSE-1.0``: the name without archive suffixes, made safe for a folder."""
    name = path.name
    for suffix in ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).lstrip("._-")
    return name or "record"


def process_path(
    source: Path,
    data_dir: Path,
    cfg: Config,
    *,
    record_id: str | None = None,
    hit: dict[str, Any] | None = None,
    source_info: dict[str, Any] | None = None,
    tmp_dir: Path | None = None,
) -> ProcessResult:
    """Extract ``source`` (an archive, or walk it if it is a folder) and write ``<data_dir>/<id>/``.

    A folder's keys start with its own name, as an archive's start with its top folder.
    """
    source = Path(source)
    if not source.exists():
        raise UserError(f"{source} does not exist")
    record_id = check_record_id(record_id or default_record_id(source))
    return process_sources(
        record_id, [(source, "")], data_dir, cfg, hit=hit,
        source_info=source_info if source_info is not None else local_source_info(source), tmp_dir=tmp_dir,
    )


def process_sources(
    record_id: str,
    sources: list[tuple[Path, str]],
    data_dir: Path,
    cfg: Config,
    *,
    hit: dict[str, Any] | None,
    source_info: dict[str, Any] | None,
    tmp_dir: Path | None = None,
    loose: Iterable[tuple[str, Path]] = (),
    left_out: Iterable[tuple[str, str]] = (),
) -> ProcessResult:
    """Write one record from several archives or folders, each with its own key prefix, and loose files.

    A record with several archives keeps them all: each is extracted into its own folder and its keys
    start with the prefix the caller gives (the archive's name), so no archive overwrites another.
    ``loose`` are files rasterized under their own key; ``left_out`` are keys listed with a skip reason.
    """
    started = time.monotonic()
    check_record_id(record_id)
    with _ExtractionSpace(record_id, cfg.extract, tmp_dir, keep_files_up_to=cfg.raster.max_file_bytes) as space:
        roots = [space.unpack(path, prefix, i) for i, (path, prefix) in enumerate(sources)]
        record = add_loose_files(rasterize_tree(roots, cfg.raster), loose, left_out, cfg.raster)
    metadata = {
        "hit": hit,
        "tree": record.tree,
        "source": source_info,
        "stats": record.stats.to_dict(),
        "tool": tool_info(cfg),
        "masked": record.masked,
    }
    written = write_record(Path(data_dir), record_id, record.images, metadata,
                           formats=cfg.output.formats, raster_attrs=cfg.raster.layout(),
                           h5_compression=cfg.output.h5_compression, texts=record.texts)
    return ProcessResult(record_id, written, record.stats, time.monotonic() - started)


class _ExtractionSpace:
    """Where a record's archives are extracted, all removed on leaving: each archive in a RAM-backed folder when
    it fits what is left of ``extract.memory_budget_mb`` for the record (and the job's memory, and the folder's
    free space: :func:`~zenodo_hpc.record.extract.choose_memory_root`), else in a temporary folder under ``tmp_dir``
    (node-local disk). The RAM folder carries an owner file (:func:`~zenodo_hpc.record.leftovers.record_tmp`), so that
    if this process is killed the next worker on the node removes it. An archive that takes more RAM than
    expected, or finds the RAM folder full, is extracted again on disk."""

    def __init__(self, record_id: str, cfg: ExtractConfig, tmp_dir: Path | None, keep_files_up_to: int = 0) -> None:
        self.record_id = record_id
        self.cfg = cfg
        self.keep_files_up_to = keep_files_up_to  # files the walk reads whole: their bytes are kept as extracted
        self.tmp_dir = tmp_dir
        self.budget = cfg.memory_budget_mb << 20
        self._stack = contextlib.ExitStack()
        self._disk: Path | None = None
        self._ram: dict[Path, Path] = {}  # RAM root -> this record's folder there

    def __enter__(self) -> _ExtractionSpace:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def unpack(self, path: Path, prefix: str, index: int) -> WalkRoot:
        """The folder to walk for one source and its key prefix: a folder as it is, an archive extracted."""
        if path.is_dir():
            return WalkRoot(path, prefix + path.resolve().name + "/")
        place = choose_memory_root(path, self.budget)
        log.debug("record %s: %s extracted %s", self.record_id, path.name, place.why)
        if place.root is not None:
            target = place.root
            try:  # the record's RAM folder is made here too: a full tmpfs may refuse even that
                target = self._ram_folder(place.root) / f"extracted-{index}"
                extracted = self._extract(path, target, place.allowance)
            except OverFootprint as exc:
                log.info("record %s: %s; extracting it on disk instead", self.record_id, exc)
            except OSError as exc:
                if exc.errno not in _RAM_FULL:
                    raise UserError(f"cannot extract {path.name} into {target}: {exc.strerror or exc}") from exc
                log.info("record %s: %s is full (%s); extracting %s on disk instead", self.record_id, place.root,
                         exc.strerror, path.name)
            else:
                self.budget -= extracted.footprint
                return WalkRoot(target, prefix, extracted)
            if target != place.root:
                shutil.rmtree(target, ignore_errors=True)
        target = self._disk_folder() / f"extracted-{index}"
        try:
            extracted = self._extract(path, target, None)
        except OSError as exc:  # reading the archive is covered by ExtractError; this is our own disk
            raise UserError(f"cannot extract {path.name} into {target}: {exc.strerror or exc}") from exc
        return WalkRoot(target, prefix, extracted)

    def _extract(self, path: Path, target: Path, footprint_limit: int | None) -> ExtractStats:
        target.mkdir()
        return extract_archive(path, target, max_bytes=self.cfg.max_bytes, max_members=self.cfg.max_members,
                               footprint_limit=footprint_limit, keep_files_up_to=self.keep_files_up_to)

    def _disk_folder(self) -> Path:
        if self._disk is None:
            self._disk = Path(self._stack.enter_context(
                tempfile.TemporaryDirectory(prefix=f"zenodo-hpc-{self.record_id}-", dir=self.tmp_dir)))
        return self._disk

    def _ram_folder(self, root: Path) -> Path:
        if root not in self._ram:
            self._ram[root] = self._stack.enter_context(record_tmp(self.record_id, root))
        return self._ram[root]


def format_summary(result: ProcessResult) -> str:
    """The one-line summary ``process`` prints."""
    stats = result.stats
    skipped = sum(stats.skipped.values())
    reasons = ", ".join(f"{name} {count}" for name, count in sorted(stats.skipped.items()))
    return (
        f"record {result.record_id}: {stats.files} files seen, {stats.rasterized} rasterized, "
        f"{skipped} skipped{f' ({reasons})' if reasons else ''}, {stats.segments} segments, "
        f"{_human_bytes(result.written.bytes)} written to {result.written.folder} in {result.seconds:.2f} s"
    )


def _human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"
