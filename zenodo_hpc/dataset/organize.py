"""The by-language export: one PNG per code image, grouped by file extension, packed for Kaggle.

``zenodo-hpc organize RUN_DIR --out DIR`` reads every completed record of a run directory (or of its
packed squashfs image, or of a mounted one), and for each rasterized file whose extension is in the list
writes one 80x80 PNG per code image::

    DIR/<ext>/<id>/<id>_<i>.png     i counts the record's images of that extension, files in sorted order
    DIR/index.csv                   png, extension, record_id, doi, file_path, segment, license: one row per PNG
    DIR/<ext>.tar.gz                the <ext>/ folder, one deterministic archive per extension
    DIR/datapackage.json            Kaggle dataset-metadata.json and Frictionless data package at once

Everything is built in a hidden staging folder beside ``DIR`` and swapped in when complete, so ``DIR``
never holds half an export, and running again replaces the previous export whole (no stale PNG stays).
Each record keeps the license its authors gave it on Zenodo (core/licenses.py): ``index.csv`` names it,
``datapackage.json`` lists the real set, and ``license_categories`` (``export.license_categories`` of the run's
config) keeps only the records of some categories, counting and naming the others.
The archives and ``datapackage.json`` are byte-identical when the same records are organized again, from
the run directory or from its image (docs/organize.md).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import csv
import gzip
import hashlib
import io
import json
import logging
import multiprocessing
import os
import posixpath
import re
import shutil
import sys
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import __version__
from ..core.errors import UserError
from ..core.licenses import (
    CATEGORIES,
    UNREADABLE,
    check_categories,
    frictionless_license,
    kaggle_license,
    license_category,
    license_title,
    record_license,
)

if TYPE_CHECKING:  # the rest is imported where it is used: `zenodo-hpc --help` reads DEFAULT_EXTENSIONS only
    import numpy as np

log = logging.getLogger(__name__)

DEFAULT_EXTENSIONS = ("txt", "js", "py", "json", "java", "csv", "html", "xml", "cpp", "map", "c", "m", "css", "dat",
                      "f90", "cc", "go", "md", "R", "cxx", "cs", "h")
PNG_MODES = ("grey", "palette")
DEFAULT_NAME = "zenodo-ml-code-images"
DEFAULT_TITLE = "Zenodo ML code images by language"
DEFAULT_USERNAME = "zenodo-hpc"
SUBTITLE = "Source code of Zenodo software records as 80x80 images, by language"
KEYWORDS = ("computer science", "programming", "software", "image")
INDEX = "index.csv"
DATAPACKAGE = "datapackage.json"
INDEX_COLUMNS = ("png", "extension", "record_id", "doi", "file_path", "segment", "license")
MAX_WORKERS = 16
GZIP_LEVEL = 6  # the PNGs are deflated already: a higher level gains little and costs time
TAR_FORMAT = tarfile.PAX_FORMAT  # plain ustar headers unless a name is longer than 100/255 characters
MARKER = "zenodo_hpc"  # the datapackage.json property that says a folder is an organize output

_EXTENSION = re.compile(r"[A-Za-z0-9_+-]{1,32}")
# What the kaggle client refuses before uploading (kaggle 2.x, KaggleApi._validate_slug_syntax and
# dataset_create_new): a slug of lowercase letters and digits in words joined by single hyphens, an owner the same
# with "_" too, slug and title 6 to 50 characters. publish checks them again on what it is given.
KAGGLE_SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
KAGGLE_OWNER = re.compile(r"[a-z0-9]+(?:[_-][a-z0-9]+)*")
KAGGLE_LENGTHS = (6, 50)
_STAGING = ".{name}.partial-"  # staging folders: hidden siblings of --out
NO_EXTENSION = "(none)"  # how a file without an extension (Makefile, .gitignore) is counted
# Why a rasterized file of a record read gives no PNG: its extension is not one of those exported, or it is empty
NOT_LISTED = "extension not exported"
EMPTY = "empty file"
NO_LICENSE = "(none)"  # how a record without a license is shown
LISTED_RECORDS = 100  # records named one by one in the description and the summary line; the rest are counted


class LeftOut(NamedTuple):
    """The rasterized files of the records read that gave no PNG, for one reason and one extension."""

    reason: str  # NOT_LISTED or EMPTY
    extension: str  # NO_EXTENSION for none
    files: int
    images: int  # the code images they hold (none for EMPTY)


class LicenseLeftOut(NamedTuple):
    """A record read whose PNGs are not exported because its license is of a category not asked for."""

    record_id: str
    license: str | None  # Zenodo's id, lower case; None: no license
    category: str
    images: int  # the code images of its files with an exported extension


@dataclass
class OrganizeResult:
    source: Path
    out: Path
    png: str
    records: int  # completed records read
    files: int  # source files that gave at least one PNG
    pngs: int
    by_extension: dict[str, int] = field(default_factory=dict)  # PNGs per extension (those with any)
    archives: list[Path] = field(default_factory=list)
    archive_bytes: int = 0
    seconds: float = 0.0
    left_out: list[LeftOut] = field(default_factory=list)  # what the records hold that is not exported, and why
    license_categories: tuple[str, ...] = CATEGORIES  # the categories exported
    license_left_out: list[LicenseLeftOut] = field(default_factory=list)  # records left out for their license
    licenses: dict[str, int] = field(default_factory=dict)  # exported records per license (NO_LICENSE for none)


def file_extension(path: str) -> str | None:
    """The text after the last ``.`` of the file's name, case kept (``R`` is not ``r``).

    ``None`` when the name has no dot, ends with one (``notes.``), or is a dotfile such as ``.gitignore``
    (leading dots are not extension dots, as in :func:`os.path.splitext`: ``.eslintrc.json`` is ``json``).
    """
    name = posixpath.basename(str(path)).lstrip(".")
    stem, dot, extension = name.rpartition(".")
    return extension if dot and stem and extension else None


def organize(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    extensions: Iterable[str] | str = DEFAULT_EXTENSIONS,
    png: str = "grey",
    workers: int | None = None,
    progress: bool | None = None,
    name: str = DEFAULT_NAME,
    title: str = DEFAULT_TITLE,
    username: str = DEFAULT_USERNAME,
    license_categories: Iterable[str] | str | None = None,
) -> OrganizeResult:
    """Export the code images of ``source`` (run directory, ``*.sqsh`` image or mounted image) into ``out``.

    ``extensions`` (exact, case-sensitive; a comma-separated string works too) chooses the files; ``png``
    is ``grey`` or ``palette`` (docs/organize.md); ``workers`` processes encode the PNGs (default: the
    CPUs this process may use, at most 16); ``progress`` shows a bar (default: when stderr is a terminal).
    ``name``, ``title`` and ``username`` go into ``datapackage.json`` (``id`` is ``<username>/<name>``).
    ``license_categories`` keeps the records whose license is of these categories (a list, or comma-separated);
    ``None``: the run's ``export.license_categories`` for a run directory, every category for an image.
    """
    started = time.monotonic()
    wanted = check_extensions(extensions)
    if png not in PNG_MODES:
        raise UserError(f"unknown PNG mode {png!r}: use grey or palette")
    check_package_names(name, title, username)
    out = Path(os.path.abspath(out))  # "out/..", "." and the like name a real folder with a real parent
    if out.is_symlink():  # replace what the link points to, keep the link
        out = out.resolve()
    reader = open_source(Path(source))
    categories = _categories(license_categories, reader)
    check_replaceable(out)
    workers = min(default_workers() if workers is None else max(1, int(workers)), reader.count)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=_STAGING.format(name=out.name), dir=out.parent))
    except OSError as exc:
        raise UserError(f"cannot create {out}: {exc.strerror or exc}") from None
    try:
        chmod_shared(staging)
        with worker_pool(workers) as pool:
            rows, left_out, license_left_out = _export_records(reader, staging, wanted, png, categories, pool,
                                                               workers, progress)
            if not rows and license_left_out:
                raise UserError(f"{reader.source}: every record with a file to export has a license of a category "
                                f"not exported (kept: {', '.join(categories)}; left out: "
                                f"{_license_counts(license_left_out)}); nothing to export")
            if not rows:
                raise UserError(f"{reader.source}: none of its {reader.count} records has a rasterized file with "
                                f"extension {', '.join(sorted(wanted))}; nothing to export")
            rows.sort(key=_row_order)
            write_index(staging / INDEX, rows)
            by_extension = dict(sorted(Counter(row.extension for row in rows).items()))
            archives = _build_archives(staging, list(by_extension), pool, workers)
        package = datapackage(staging, rows, by_extension, reader.count, png=png, name=name, title=title,
                              username=username, left_out=left_out, license_categories=categories,
                              license_left_out=license_left_out)
        (staging / DATAPACKAGE).write_text(json.dumps(package, indent=1, ensure_ascii=False) + "\n",
                                           encoding="utf-8")
        check_replaceable(out)
        swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    files = len({(row.record_id, row.file_path) for row in rows})
    archive_paths = [out / archive for archive in archives]
    return OrganizeResult(
        source=reader.source, out=out, png=png, records=reader.count, files=files, pngs=len(rows),
        by_extension=by_extension, archives=archive_paths,
        archive_bytes=sum(p.stat().st_size for p in archive_paths), seconds=time.monotonic() - started,
        left_out=left_out, license_categories=categories, license_left_out=license_left_out,
        licenses=records_per_license(rows),
    )


def _categories(given: Iterable[str] | str | None, reader: _Source) -> tuple[str, ...]:
    """The license categories to export: those ``given``, else the run's ``export.license_categories`` (a run
    directory's run.yaml), else all."""
    if given is None:
        given = _run_categories(reader)
    try:
        return check_categories(given)
    except ValueError as exc:
        raise UserError(f"--license-categories: {exc}") from None


def _run_categories(reader: _Source) -> tuple[str, ...]:
    """``export.license_categories`` of the run directory's frozen config; every category for an image."""
    from ..core.state import RunDir, load_run

    if reader.kind != "run" or not RunDir(reader.source).run_yaml.is_file():
        return CATEGORIES
    return tuple(load_run(reader.source)[1].export.license_categories)


def _top(counts: Iterable[tuple[str, int]], most: int = 8, noun: str = "extensions") -> str:
    """``py 1353, h 52, ...``: the largest first (ties by name), at most ``most`` of them."""
    top = sorted(counts, key=lambda item: (-item[1], item[0]))
    more = f", ... ({len(top)} {noun})" if len(top) > most else ""
    return ", ".join(f"{name} {count}" for name, count in top[:most]) + more


def format_summary(result: OrganizeResult) -> str:
    """The one line ``organize`` prints."""
    shown = _top(result.by_extension.items())
    return (f"organize: {result.pngs} PNGs ({result.png}) of {result.files} files from {result.records} records "
            f"({shown}) -> {result.out}: {len(result.archives)} archives, "
            f"{result.archive_bytes / 1e6:.1f} MB, index.csv, datapackage.json in {result.seconds:.1f} s; "
            f"licenses: {_top(result.licenses.items(), noun='licenses')}"
            f"{format_left_out(result.left_out)}"
            f"{format_license_left_out(result.license_left_out, result.license_categories)}")


def format_license_left_out(left_out: list[LicenseLeftOut], categories: tuple[str, ...]) -> str:
    """The end of the summary line: the records left out for their license, counted by license and named (the
    first :data:`LISTED_RECORDS`); "" when none is."""
    if not left_out:
        return ""
    images = sum(entry.images for entry in left_out)
    ids = [entry.record_id for entry in left_out]
    named = ", ".join(ids[:LISTED_RECORDS]) + (f", ... ({len(ids)} records)" if len(ids) > LISTED_RECORDS else "")
    return (f"; left out for their license (categories kept: {', '.join(categories)}): "
            f"{_count(len(left_out), 'record')}, {_count(images, 'image')} ({_license_counts(left_out)}): {named}")


def _license_counts(left_out: Iterable[LicenseLeftOut]) -> str:
    """``gpl-3.0-only 2, (none) 1``: records left out per license."""
    return _top(Counter(entry.license or NO_LICENSE for entry in left_out).items(), noun="licenses")


def records_per_license(rows: Iterable[IndexRow]) -> dict[str, int]:
    """Exported records per license id (:data:`NO_LICENSE` for none), the most first."""
    counts = Counter(license_ or NO_LICENSE for license_, _ in {(r.license, r.record_id) for r in rows})
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def format_left_out(left_out: list[LeftOut]) -> str:
    """The end of the summary line: what the records hold that the export leaves out, by reason and extension
    (images of the files whose extension is not exported, empty files); "" when nothing is."""
    parts = []
    unlisted = [entry for entry in left_out if entry.reason == NOT_LISTED]
    if unlisted:
        parts.append(f"{_count(sum(e.images for e in unlisted), 'image')} of "
                     f"{_count(sum(e.files for e in unlisted), 'file')} whose extension is not exported "
                     f"({_top((e.extension, e.images) for e in unlisted)})")
    empty = [entry for entry in left_out if entry.reason == EMPTY]
    if empty:
        parts.append(f"{_count(sum(e.files for e in empty), 'empty file')} "
                     f"({_top((e.extension, e.files) for e in empty)})")
    return f"; left out: {', and '.join(parts)}" if parts else ""


# --- checking the arguments -------------------------------------------------------------------------------


def check_extensions(extensions: Iterable[str] | str) -> frozenset[str]:
    """The set of extensions, each as given but for a leading dot (``.py`` is ``py``); one-line errors."""
    items = extensions.split(",") if isinstance(extensions, str) else list(extensions)
    wanted = set()
    for item in items:
        text = str(item).strip()
        text = text[1:] if text.startswith(".") else text
        if not text and isinstance(extensions, str):
            continue  # "py,,R" or a trailing comma
        if not _EXTENSION.fullmatch(text):
            raise UserError(f"bad extension {item!r}: use letters, digits, '_', '+' or '-' (e.g. py, R, f90)")
        wanted.add(text)
    if not wanted:
        raise UserError("no extensions given: name at least one, e.g. --extensions py,R,c")
    return frozenset(wanted)


def check_package_names(name: str, title: str, username: str) -> None:
    """Kaggle's rules (which also satisfy Frictionless): slug and title 6-50 characters (:data:`KAGGLE_SLUG`)."""
    low, high = KAGGLE_LENGTHS
    if not (KAGGLE_SLUG.fullmatch(name) and low <= len(name) <= high):
        raise UserError(f"bad dataset name {name!r}: {low} to {high} lowercase letters and digits, words joined by "
                        f"single hyphens, e.g. {DEFAULT_NAME}")
    if not low <= len(title) <= high:
        raise UserError(f"bad dataset title {title!r}: Kaggle wants {low} to {high} characters (it has {len(title)})")
    if not KAGGLE_OWNER.fullmatch(username):
        raise UserError(f"bad Kaggle username {username!r}: lowercase letters and digits, words joined by a single "
                        "'-' or '_', as in the profile URL")


def default_workers() -> int:
    """The CPUs this process may use (a SLURM job's allocation, not the whole node), at most 16."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_WORKERS))


def check_replaceable(out: Path) -> None:
    """``out`` may be replaced: missing, empty, or an earlier export (its datapackage.json says so).

    Why: the export replaces ``out`` whole, so a typo such as ``--out ~`` must not delete a home folder.
    """
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise UserError(f"{out} exists and is not a folder: choose another --out")
    try:
        if not any(out.iterdir()):
            return
        package = json.loads((out / DATAPACKAGE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        package = None
    if not (isinstance(package, dict) and MARKER in package):
        raise UserError(f"{out} is not empty and holds no earlier organize output (no {DATAPACKAGE} written by "
                        "zenodo-hpc); choose a new or empty folder for --out")


# --- where the records come from --------------------------------------------------------------------------


@dataclass
class _Source:
    """The records to read: ``count`` of them, each a task for :func:`_export_record`."""

    source: Path
    kind: str  # "run", "image" or "mounted"
    count: int
    tasks: Callable[[], Iterator[tuple[str, Any, Any]]]  # (id, record folder | images, None | metadata)


def open_source(source: Path) -> _Source:
    """What ``source`` is (run directory, squashfs image file, mounted or extracted image) and its records."""
    from ..core.state import DONE, RunDir, ids_in
    from .image import IMAGE_SUFFIXES

    if not source.exists():
        raise UserError(f"{source} does not exist")
    if source.is_file():
        if source.name.endswith(IMAGE_SUFFIXES):
            return _image_source(source)
        raise UserError(f"{source} is neither a run directory nor a squashfs image (*.sqsh)")
    run = RunDir(source)
    if run.data.is_dir() and run.state.is_dir():
        done = ids_in(run, DONE) - _left_out(run)
        ids = sorted((d.name for d in subfolders(run.data) if d.name in done), key=record_order)
        if not ids:
            raise UserError(f"{source} has no completed records (none in data/ with a state/done/ marker); "
                            f"finish the run first (zenodo-hpc status {source})")
        return _Source(source, "run", len(ids), lambda: ((i, run.record_folder(i), None) for i in ids))
    if (source / "manifest.jsonl").is_file():  # a mounted (squashfuse) or extracted image: records are done
        ids = sorted((d.name for d in subfolders(source) if _holds_images(d)), key=record_order)
        if not ids:
            raise UserError(f"{source} holds no record folders (no <id>/images_<id>.h5)")
        return _Source(source, "mounted", len(ids), lambda: ((i, source / i, None) for i in ids))
    raise UserError(f"{source} is neither a run directory (no data/ and state/ folders) nor a squashfs image")


def _left_out(run: Any) -> set[str]:
    """The run's records withdrawn from Zenodo or named by its ``dataset.exclude`` (its run.yaml says which file):
    an export never holds them (an image already lacks them)."""
    from ..core.state import load_run
    from .removals import left_out

    return set(left_out(run, load_run(run.root)[1])) if run.run_yaml.is_file() else set()


def _image_source(path: Path) -> _Source:
    from .image import SquashImage

    with SquashImage(path) as image:
        count = len([check_folder_name(i, path) for i in image.record_ids()])
    if not count:
        raise UserError(f"{path} holds no records")

    def tasks() -> Iterator[tuple[str, Any, Any]]:
        # as zenodo_hpc.dataset.image.iter_image_records, one record in memory at a time, but counted first for the bar
        with SquashImage(path) as image:
            for record_id in image.record_ids():
                check_folder_name(record_id, path)
                yield record_id, image.images(record_id), image.metadata(record_id)

    return _Source(path, "image", count, tasks)


def subfolders(folder: Path) -> list[Path]:
    """Record folders (hidden staging folders left out); a name no record can have is refused, naming it."""
    try:
        found = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError as exc:
        raise UserError(f"cannot list {folder}: {exc.strerror or exc}") from None
    for path in found:
        check_folder_name(path.name, folder)
    return found


_RECORD_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


def check_folder_name(name: str, where: Path | str) -> str:
    """A record folder's name must be a record id: a newline or a control character in it would break the
    index, the archives' member names and every line-based tool downstream."""
    if not _RECORD_NAME.fullmatch(name):
        raise UserError(f"{where}: the record folder {name[:60]!r} has a name no record can have (letters, "
                        "digits, '.', '_' and '-' only): move it away, then export again")
    return name


def _holds_images(folder: Path) -> bool:
    return any((folder / f"images_{folder.name}{suffix}").is_file() for suffix in (".h5", ".pkl"))


def record_order(record_id: str) -> tuple[int, int, str]:
    """Zenodo ids are integers: 9 before 10; other names after them, by name (as the image reader)."""
    return (0, int(record_id), "") if record_id.isdigit() else (1, 0, record_id)


# --- one record -> its PNGs -------------------------------------------------------------------------------


def png_name(extension: str, record_id: str, number: int) -> str:
    """``<ext>/<id>/<id>_<i>.png``, relative to the output folder."""
    return f"{extension}/{record_id}/{record_id}_{number}.png"


class IndexRow(NamedTuple):
    """One PNG (a row of index.csv). A tuple: millions of them are held until the index is sorted."""

    extension: str
    record_id: str
    number: int  # the i of <id>_<i>.png
    doi: str
    file_path: str
    segment: int
    license: str  # the record's Zenodo license id, lower case; "" when it has none

    @property
    def png(self) -> str:
        return png_name(self.extension, self.record_id, self.number)


def record_rows(record_id: str, images: dict[str, np.ndarray], doi: str,
                extensions: frozenset[str], license_: str = "") -> Iterator[tuple[IndexRow, np.ndarray]]:
    """``(index row, image)`` for every image of the files with a wanted extension, in numbering order."""
    numbers: Counter[str] = Counter()
    for path in sorted(images):
        extension = file_extension(path)
        if extension not in extensions:
            continue
        for segment, image in enumerate(images[path]):
            yield IndexRow(extension, record_id, numbers[extension], doi, path, segment, license_), image
            numbers[extension] += 1


def _doi(metadata: Any) -> str:
    hit = metadata.get("hit") if isinstance(metadata, dict) else None
    doi = hit.get("doi") if isinstance(hit, dict) else None
    return str(doi) if doi else ""


def _license(metadata: Any) -> str | None:
    """The record's license id from its metadata's ``hit`` (the record as harvested); None: it has none."""
    return record_license(metadata.get("hit") if isinstance(metadata, dict) else None)


def _wanted_images(images: dict[str, np.ndarray], extensions: frozenset[str]) -> int:
    return sum(len(segments) for path, segments in images.items() if file_extension(path) in extensions)


def files_left_out(images: dict[str, np.ndarray], extensions: frozenset[str]) -> Iterator[tuple[str, str, int]]:
    """``(reason, extension, images)`` of each file of a record that gives no PNG: its extension is not one of
    ``extensions`` (:data:`NOT_LISTED`), or it is but the file is empty (:data:`EMPTY`, no image)."""
    for path, segments in images.items():
        extension = file_extension(path)
        if extension not in extensions:
            yield NOT_LISTED, extension or NO_EXTENSION, len(segments)
        elif not len(segments):
            yield EMPTY, extension, 0


def _export_record(record_id: str, where: Any, metadata: Any, staging: str, extensions: frozenset[str],
                   png: str, categories: tuple[str, ...] = CATEGORIES,
                   ) -> tuple[list[IndexRow], list[tuple[str, str, int]], LicenseLeftOut | None]:
    """Write one record's PNGs under ``staging``; its index rows, its files left out (:func:`files_left_out`), and
    the record itself when its license is of none of the ``categories`` (then nothing is written). Runs in a
    worker process.

    ``where`` is the record folder (read here, in the worker) or its images already read from an image.
    """
    from .load import load_images, load_metadata
    from .png import encode

    if isinstance(where, (str, os.PathLike)):
        images = load_images(where)
        metadata = load_metadata(where) if any(file_extension(p) in extensions for p in images) else None
    else:
        images = where
    left_out = list(files_left_out(images, extensions))
    license_ = _license(metadata)
    category = license_category(license_)
    if category not in categories and _wanted_images(images, extensions):
        return [], left_out, LicenseLeftOut(record_id, license_, category, _wanted_images(images, extensions))
    rows = []
    made: set[Path] = set()
    for row, image in record_rows(record_id, images, _doi(metadata), extensions, license_ or ""):
        target = Path(staging) / row.png
        if target.parent not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        target.write_bytes(encode(image, png))
        rows.append(row)
    return rows, left_out, None


def _export_records(reader: _Source, staging: Path, extensions: frozenset[str], png: str,
                    categories: tuple[str, ...], pool: cf.ProcessPoolExecutor | None, workers: int,
                    progress: bool | None) -> tuple[list[IndexRow], list[LeftOut], list[LicenseLeftOut]]:
    """Every record's rows, its PNGs written by the ``pool``'s processes (by this one without a pool), what the
    records hold that is left out, counted by reason and extension, and the records left out for their license."""
    from tqdm import tqdm

    rows: list[IndexRow] = []
    files: Counter[tuple[str, str]] = Counter()
    images: Counter[tuple[str, str]] = Counter()
    disable = None if progress is None else not progress
    tasks = ((record_id, where, meta, str(staging), extensions, png, categories)
             for record_id, where, meta in reader.tasks())
    license_left_out: list[LicenseLeftOut] = []
    log.info("organizing %d records of %s", reader.count, reader.source)
    with tqdm(total=reader.count, unit="rec", desc="organize", disable=disable, leave=False) as bar, \
            contextlib.closing(_map(pool, workers, _export_record, tasks)) as results:
        for record_rows_, left_out, license_out in results:
            rows.extend(record_rows_)
            if license_out is not None:
                license_left_out.append(license_out)
            for reason, extension, count in left_out:
                files[reason, extension] += 1
                images[reason, extension] += count
            bar.update()
    order = sorted(files, key=lambda key: (key[0] != NOT_LISTED, -images[key], -files[key], key[1]))
    license_left_out.sort(key=lambda entry: record_order(entry.record_id))
    return rows, [LeftOut(reason, extension, files[reason, extension], images[reason, extension])
                  for reason, extension in order], license_left_out


@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[cf.ProcessPoolExecutor | None]:
    """``workers`` processes, started at once; ``None`` for 1 (everything then runs in this process).

    On Linux the workers are forked (what Python 3.11 does by default) and all of them are started here,
    before the progress bar starts its thread: a fork server or spawned workers would re-run the caller's
    main script, which breaks scripts without an ``if __name__ == "__main__"`` guard and code fed on stdin.
    """
    if workers <= 1:
        yield None
        return
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else None)
    pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=context)
    try:
        pool.submit(int).result()  # with fork, the first submit starts every worker
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _map(pool: cf.ProcessPoolExecutor | None, workers: int, fn: Callable[..., Any],
         tasks: Iterable[tuple[Any, ...]]) -> Generator[Any, None, None]:
    """``fn(*task)`` for each task in the ``pool`` of ``workers`` (here without one), 4 per worker in flight.

    Results come back as they finish (callers sort). Bounded, so that records read from an image do not all
    wait in memory; the first error stops the rest (close the generator to stop it from outside).
    """
    if pool is None:
        for task in tasks:
            yield fn(*task)
        return
    limit = 4 * workers
    pending: set[cf.Future[Any]] = set()
    try:
        for task in tasks:
            if len(pending) >= limit:
                finished, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                yield from (future.result() for future in finished)
            pending.add(pool.submit(fn, *task))
        while pending:
            finished, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            yield from (future.result() for future in finished)
    finally:
        for future in pending:
            future.cancel()
        cf.wait(pending)  # nothing may still write into the staging folder once the caller moves on


def _row_order(row: IndexRow) -> tuple[Any, ...]:
    """Index order: extension, record (numeric ids numerically), then the PNG's number."""
    return (row.extension, record_order(row.record_id), row.number)


# --- the index, the archives, the data package ------------------------------------------------------------


def write_index(path: Path, rows: list[IndexRow]) -> None:
    """``index.csv``: UTF-8, a header, ``\\n`` line ends, quoted only where needed (RFC 4180 otherwise)."""
    with open(path, "w", encoding="utf-8", errors="backslashreplace", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(INDEX_COLUMNS)
        writer.writerows((csv_cell(r.png), csv_cell(r.extension), csv_cell(r.record_id), csv_cell(r.doi),
                          csv_cell(r.file_path), r.segment, r.license) for r in rows)


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what spreadsheets read as a formula (OWASP's list)


def csv_cell(text: str) -> str:
    """A cell that a spreadsheet shows as text: one starting like a formula gets a leading ``'``.

    File paths come from strangers' archives: ``=HYPERLINK(...)`` or ``@SUM(...)`` must not run when
    somebody opens index.csv in a spreadsheet.
    """
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def archive_name(extension: str) -> str:
    return f"{extension}.tar.gz"


def write_archive(folder: Path, extension: str) -> str:
    """``<folder>/<ext>.tar.gz`` of ``<folder>/<ext>/``, byte for byte the same whenever its files are.

    Members sorted by path (directories before their contents), mtime 0, uid/gid 0, no user or group
    names, mode 0644 (directories 0755); the gzip header has no time stamp and no file name.
    """
    root = folder / extension
    members: list[tuple[str, Path | None]] = [(extension, None)]
    for dirpath, dirnames, filenames in os.walk(root):
        relative = Path(dirpath).relative_to(folder).as_posix()
        members += [(f"{relative}/{d}", None) for d in dirnames]
        members += [(f"{relative}/{f}", Path(dirpath) / f) for f in filenames]
    members.sort(key=lambda member: member[0].split("/"))
    target = folder / archive_name(extension)
    with open(target, "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="", compresslevel=GZIP_LEVEL) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=TAR_FORMAT) as tar:
        for member_name, file in members:
            info = tarfile.TarInfo(member_name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if file is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                data = file.read_bytes()
                info.type, info.mode, info.size = tarfile.REGTYPE, 0o644, len(data)
                tar.addfile(info, io.BytesIO(data))
    return target.name


def _build_archives(staging: Path, extensions: list[str], pool: cf.ProcessPoolExecutor | None,
                    workers: int) -> list[str]:
    tasks = [(staging, extension) for extension in extensions]
    log.info("packing %d archives", len(tasks))
    with contextlib.closing(_map(pool, workers, write_archive, tasks)) as results:
        return sorted(results)


def resource_name(path: str) -> str:
    """A Frictionless resource name (lowercase ``[-a-z0-9._/]``) for a file name, distinct for distinct names.

    Capitals become ``_`` + the letter, ``_`` becomes ``__``, ``+`` becomes ``_-``: ``R.tar.gz`` is
    ``_r.tar.gz`` and ``r.tar.gz`` stays ``r.tar.gz``.
    """
    out = []
    for char in path:
        if char == "_":
            out.append("__")
        elif char == "+":
            out.append("_-")
        elif "A" <= char <= "Z":
            out.append("_" + char.lower())
        else:
            out.append(char)
    return "".join(out)


def _file_resource(path: Path, description: str, **extra: Any) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return {"name": resource_name(path.name), "path": path.name, "description": description,
            "bytes": path.stat().st_size, "hash": f"sha256:{digest.hexdigest()}", **extra}


INDEX_FIELDS = (
    ("png", "string", "path of the PNG in its archive and in the export: <ext>/<record id>/<record id>_<i>.png"),
    ("extension", "string", "the source file's extension, case kept (R and r differ)"),
    ("record_id", "string", "the Zenodo record id"),
    ("doi", "string", "the record's DOI (empty when unknown)"),
    ("file_path", "string", "path of the source file inside the record's archive, with its top folder"),
    ("segment", "integer", "which 80-line image of that file, from 0"),
    ("license", "string", "the record's license id on Zenodo, lower case (empty: the record has none)"),
)


def datapackage(folder: Path, rows: list[IndexRow], by_extension: dict[str, int], records: int, *,
                png: str, name: str = DEFAULT_NAME, title: str = DEFAULT_TITLE,
                username: str = DEFAULT_USERNAME, left_out: Iterable[LeftOut] = (),
                license_categories: tuple[str, ...] = CATEGORIES,
                license_left_out: Iterable[LicenseLeftOut] = ()) -> dict[str, Any]:
    """``datapackage.json``: Kaggle's dataset metadata and a Frictionless (v1) data package in one.

    Kaggle reads title, subtitle, id, licenses (exactly one, by name), keywords, description and resources
    (path, description, schema); Frictionless needs name and resources (name, path), and checks bytes and
    hash. Nothing in it depends on time or on where the source was, so it is as reproducible as the archives.
    ``left_out`` (what the records hold that is not exported) goes into the description and ``zenodo_hpc``.

    ``licenses`` is the real set of the exported records' licenses (Frictionless: name, title, path), absent when
    none has one. Kaggle takes exactly one: ``zenodo_hpc.kaggle_license`` is the honest choice
    (:func:`zenodo_hpc.core.licenses.kaggle_license`), which ``publish kaggle`` sends; the description gives the
    records per license and category, and names the records left out for their license.
    """
    left_out = list(left_out)
    license_left_out = list(license_left_out)
    per_record = dict(sorted({(r.record_id, r.license) for r in rows}, key=lambda item: record_order(item[0])))
    exported = {license_ or None for license_ in per_record.values()}
    chosen = kaggle_license(exported)
    named = sorted(i for i in exported if i is not None and i != UNREADABLE)
    files_per_ext = Counter(ext for ext, _, _ in {(r.extension, r.record_id, r.file_path) for r in rows})
    records_per_ext = Counter(ext for ext, _ in {(r.extension, r.record_id) for r in rows})
    resources = []
    for extension, count in by_extension.items():
        resources.append(_file_resource(
            folder / archive_name(extension),
            f"{_count(count, 'code image')} ({png} PNG, 80x80) of {_count(files_per_ext[extension], 'file')} "
            f".{extension} from {_count(records_per_ext[extension], 'record')}: "
            f"{extension}/<record id>/<record id>_<i>.png",
            mediatype="application/gzip"))
    resources.append(_file_resource(
        folder / INDEX, "One row per PNG: its record, DOI, source file and segment.",
        profile="tabular-data-resource", format="csv", mediatype="text/csv", encoding="utf-8",
        schema={"fields": [{"name": n, "type": t, "description": d} for n, t, d in INDEX_FIELDS],
                "primaryKey": ["png"]}))
    return {
        "name": name,
        "id": f"{username}/{name}",
        "title": title,
        "subtitle": SUBTITLE,
        "description": _description(rows, by_extension, records, png, left_out,
                                    _licenses_text(rows, per_record, chosen, license_categories, license_left_out)),
        **({"licenses": [frictionless_license(i) for i in named]} if named else {}),
        "keywords": list(KEYWORDS),
        "sources": [{"title": "Zenodo", "path": "https://zenodo.org"}],
        "resources": resources,
        MARKER: {"tool": "zenodo-hpc", "version": __version__, "png": png, "records": records,
                 "pngs": len(rows), "extensions": list(by_extension),
                 "left_out": [entry._asdict() for entry in left_out],
                 "kaggle_license": chosen, "license_categories": list(license_categories),
                 "licenses": _license_table(rows, per_record),
                 "license_left_out": [entry._asdict() for entry in license_left_out]},
    }


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _description(rows: list[IndexRow], by_extension: dict[str, int], records: int, png: str,
                 left_out: list[LeftOut], licenses: str) -> str:
    with_pngs = len({r.record_id for r in rows})
    table = "\n".join(f"| {ext} | {count} |" for ext, count in by_extension.items())
    mode = ("8-bit greyscale: each pixel is the Unicode code point of one character, 255 for code points "
            "of 255 and above" if png == "grey" else
            "8-bit palette: each pixel's index is the Unicode code point of one character (255 for code points "
            "of 255 and above), and the palette colours the character classes (docs/organize.md of zenodo-hpc)")
    return (
        "Code images of the software archived on Zenodo (the Zenodo-ML dataset): every text file of a "
        "record's archive becomes 80x80 images, one pixel per character, one row per line (lines cut at 80 "
        "characters, padded with spaces; 80 lines per image).\n\n"
        f"This export holds {_count(len(rows), 'image')} from {with_pngs} of the {_count(records, 'record')} read, "
        f"grouped by the source file's extension, one archive per extension. PNGs are {mode}.\n\n"
        "| extension | images |\n|---|---|\n" + table + "\n\n" + _left_out_text(left_out) +
        "`index.csv` maps each PNG to its Zenodo record id, DOI, source file, segment and license.\n\n"
        f"{licenses}\n\nMade with zenodo-hpc {__version__}."
    )


def _license_table(rows: list[IndexRow], per_record: dict[str, str]) -> list[dict[str, Any]]:
    """Per license of the exported records (None: none): its category, records and images, the most records first."""
    records = Counter(per_record.values())
    images = Counter(r.license for r in rows)
    order = sorted(records, key=lambda key: (-records[key], key))
    return [{"license": key or None, "category": license_category(key or None), "records": records[key],
             "images": images[key]} for key in order]


def _kaggle_reason(chosen: str, table: list[dict[str, Any]]) -> str:
    """Why Kaggle's one license is ``chosen``: the end of the description's sentence about it."""
    if chosen == "unknown":
        return ", since no record here has a license."
    if len(table) == 1 and chosen != "other":
        return ", the license every record here shares."
    if len(table) == 1:
        only = table[0]["license"]
        return f": every record here has the license `{only}` ({license_title(only)}), which Kaggle does not list."
    return (f": the records here have {len(table)} licenses (the tables above; `index.csv` gives each record's, and "
            "the table below when there are few records).")


def _licenses_text(rows: list[IndexRow], per_record: dict[str, str], chosen: str, categories: tuple[str, ...],
                   license_left_out: list[LicenseLeftOut]) -> str:
    """The description's licenses: records and images per license and per category, why Kaggle shows the license
    it shows, each record's license (when there are few), and the records left out for their license."""
    table = _license_table(rows, per_record)
    by_license = "\n".join(
        f"| {e['license'] or NO_LICENSE} | {license_title(e['license']) if e['license'] else 'no license'} | "
        f"{e['category']} | {e['records']} | {e['images']} |" for e in table)
    records: Counter[str] = Counter()
    images: Counter[str] = Counter()
    for entry in table:
        records[entry["category"]] += entry["records"]
        images[entry["category"]] += entry["images"]
    by_category = "\n".join(f"| {c} | {records[c]} | {images[c]} |" for c in CATEGORIES if records[c])
    text = ("## Licenses\n\nEach record keeps the license its authors gave it on Zenodo (its id, lower case, in "
            "`index.csv`'s `license` column). Categories: permissive, copyleft, other (non-commercial, "
            "no-derivatives, proprietary, custom or unknown: read the license), none (no license).\n\n"
            "| license | title | category | records | images |\n|---|---|---|---|---|\n" + by_license + "\n\n"
            "| category | records | images |\n|---|---|---|\n" + by_category + "\n\n"
            f"Kaggle takes one license per dataset: `{chosen}`{_kaggle_reason(chosen, table)}\n\n")
    if len(table) > 1 and len(per_record) <= LISTED_RECORDS:
        text += ("| record | license |\n|---|---|\n" +
                 "\n".join(f"| {rid} | {lic or NO_LICENSE} |" for rid, lic in per_record.items()) + "\n\n")
    if license_left_out:
        shown = license_left_out[:LISTED_RECORDS]
        more = (f"\n\n... and {len(license_left_out) - len(shown)} more (`datapackage.json`, "
                "`zenodo_hpc.license_left_out`)" if len(license_left_out) > len(shown) else "")
        text += (f"Left out for their license (this export keeps the categories {', '.join(categories)}): "
                 f"{_count(len(license_left_out), 'record')} with "
                 f"{_count(sum(e.images for e in license_left_out), 'image')}.\n\n"
                 "| record | license | category | images |\n|---|---|---|---|\n" +
                 "\n".join(f"| {e.record_id} | {e.license or NO_LICENSE} | {e.category} | {e.images} |"
                            for e in shown) + more + "\n\n")
    return text.rstrip("\n")


def _left_out_text(left_out: list[LeftOut]) -> str:
    """The description's account of what the records hold and the export does not, by reason and extension."""
    if not left_out:
        return ("Every file of these records that was rasterized is in it. Files that were never rasterized "
                "(binary, too large, ...) are listed in each record's metadata.\n\n")
    unlisted = [e for e in left_out if e.reason == NOT_LISTED]
    empty = sum(e.files for e in left_out if e.reason == EMPTY)
    said = []
    if unlisted:
        said.append(f"{_count(sum(e.images for e in unlisted), 'image')} of "
                    f"{_count(sum(e.files for e in unlisted), 'file')} whose extension is not among those exported")
    if empty:
        said.append(f"{_count(empty, 'empty file')} (no image)")
    rows = "\n".join(f"| {e.extension} | {e.files} | {e.images} | {e.reason} |" for e in left_out)
    return (f"Left out: {', and '.join(said)}. Files that were never rasterized (binary, too large, ...) are not "
            "counted here: each record's metadata lists them.\n\n"
            "| extension | files | images | why |\n|---|---|---|---|\n" + rows + "\n\n")


# --- into place --------------------------------------------------------------------------------------------


def chmod_shared(folder: Path) -> None:
    """mkdtemp makes 0700 folders; the export is for sharing: what mkdir would give under the umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)


def swap_into_place(staging: Path, out: Path) -> None:
    """Rename the finished ``staging`` to ``out``; an earlier ``out`` is moved aside, then deleted."""
    if not out.exists():
        os.rename(staging, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.rename(out, old / out.name)
    try:
        os.rename(staging, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.rename(old / out.name, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
