"""``zenodo-hpc export``: the dataset as ML users load it today, Parquet shards and a dataset card in the layout
the Hugging Face Hub and ``datasets.load_dataset(DIR)`` read (docs/export-and-hub.md).

One row per rasterized file, with the columns of :data:`COLUMNS`; its ``images`` equal the h5's, ``content`` is
the text they were made from (credentials masked when the record was processed).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.config import ExportConfig
from ..core.errors import UserError
from ..core.licenses import license_category, record_license
from .hf_card import COLUMN_TABLE

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .dedup import Deduplicator
    from .hf_card import CardFacts

# The columns, in order: hf_card.COLUMN_TABLE says what each holds (the card and docs/export-and-hub.md show it).
COLUMNS = tuple(name for name, _, _ in COLUMN_TABLE)


def parquet_schema(height: int, width: int) -> pa.Schema:
    """The shards' schema: strings, ``size_bytes`` int64, ``n_images`` int32, and ``images`` a list of
    ``height`` x ``width`` fixed-size lists of uint32, which ``datasets`` reads as ``List(List(List(uint32,
    length=width), length=height))`` and numpy as an ``(n, height, width)`` array."""
    import pyarrow as pa

    image = pa.list_(pa.list_(pa.uint32(), width), height)
    types = {"size_bytes": pa.int64(), "images": pa.list_(image), "n_images": pa.int32()}
    required = {"record_id", "license_category", "path", "size_bytes", "sha256", "content", "images", "n_images",
                "near_dup_cluster"}
    return pa.schema([pa.field(name, types.get(name, pa.string()), nullable=name not in required)
                      for name in COLUMNS])


# --- sizes: datasets' own limits for the Parquet it writes (datasets 5.2, config.py: MAX_ROW_GROUP_SIZE "100MB",
# MAX_SHARD_SIZE "500MB", both uncompressed), and at most 100 rows a row group, the batch it uses for image data
# (ARROW_RECORD_BATCH_SIZE_FOR_IMAGE_DATASETS): the Hub's dataset viewer reads one row group to show a page.
ROW_GROUP_ROWS = 100
ROW_GROUP_BYTES = 64 * 1024 * 1024  # below datasets' 100 MB: a buffered group is what memory holds per split
SHARD_BYTES = 500 * 1000 * 1000
COMPRESSION = "zstd"
PYARROW_REQUIREMENT = "'pyarrow>=14'"
INSTALL_HINT = f"python -m pip install {PYARROW_REQUIREMENT} 'datasketch>=2.0,<3' (the export extra)"
MAX_FIELD_CHARS = 4096  # a DOI, title or version longer than this is not one: null, and the record still exported
_ID = re.compile(r"[0-9]{1,20}")
EXPORT_FILES = ("README.md", "data")  # all an export folder holds: what may be replaced by the next export


@dataclass
class ExportResult:
    """What ``export_dataset`` wrote: the folder, its rows and records per split, and the card's facts."""

    out: Path
    rows: dict[str, int]
    records: dict[str, int]
    shards: dict[str, list[str]]
    facts: CardFacts
    seconds: float


# --- where the records come from --------------------------------------------------------------------------


@dataclass
class _Source:
    """The records to export (ids in Zenodo's order), how to open each one's h5 and metadata, and what was left
    out before the export saw them."""

    label: str
    ids: list[str]
    open_record: Any  # record id -> context manager of (metadata dict, h5 file: a path or a file object)
    settings: ExportConfig
    raster: tuple[int, int] | None  # (height, width) when the source says; else read from the first record
    opted_out: int = 0
    withdrawn: int = 0
    close: Callable[[], None] = lambda: None  # what the source holds open (an image file)


def open_source(source: Path, settings: ExportConfig | None) -> _Source:
    """A run directory (its done records, less those withdrawn or excluded) or a squashfs image."""
    from .image import IMAGE_SUFFIXES

    if not source.exists():
        raise UserError(f"{source} does not exist")
    if source.is_file():
        if not source.name.endswith(IMAGE_SUFFIXES):
            raise UserError(f"{source} is neither a run directory nor a squashfs image (*.sqsh)")
        return _image_source(source, settings)
    return _run_source(source, settings)


def _run_source(source: Path, settings: ExportConfig | None) -> _Source:
    from ..core.state import DONE, RunDir, ids_in, load_run
    from .load import load_metadata, records_without_text
    from .organize import record_order, subfolders
    from .removals import excluded, withdrawn

    run = RunDir(source)
    if not (run.data.is_dir() and run.state.is_dir() and run.run_yaml.is_file()):
        raise UserError(f"{source} is neither a run directory (no data/, state/ and run.yaml) nor a squashfs image")
    _, cfg = load_run(source)
    opted_out, gone = excluded(run, cfg), withdrawn(run)
    done = ids_in(run, DONE) - set(opted_out) - set(gone)
    folders = sorted((d for d in subfolders(run.data) if d.name in done), key=lambda d: record_order(d.name))
    if not folders:
        raise UserError(f"{source} has no completed records (none in data/ with a state/done/ marker); "
                        f"finish the run first (zenodo-hpc status {source})")
    _check_record_ids([d.name for d in folders], source)
    _refuse_without_text(records_without_text(folders), source)

    @contextlib.contextmanager
    def open_record(record_id: str) -> Iterator[tuple[Any, Any]]:
        folder = run.record_folder(record_id)
        yield load_metadata(folder), folder / f"images_{record_id}.h5"

    return _Source(f"run directory {source.name}", [d.name for d in folders], open_record, settings or cfg.export,
                   (cfg.raster.height, cfg.raster.width), opted_out=len(opted_out), withdrawn=len(gone))


def _image_source(path: Path, settings: ExportConfig | None) -> _Source:
    from .image import SquashImage, member_file
    from .organize import check_folder_name

    image = SquashImage(path)
    try:
        ids = _check_record_ids([check_folder_name(i, path) for i in image.record_ids()], path)
        if not ids:
            raise UserError(f"{path} holds no records")
    except BaseException:
        image.close()
        raise

    @contextlib.contextmanager
    def open_record(record_id: str) -> Iterator[tuple[Any, Any]]:
        h5_name = f"{record_id}/images_{record_id}.h5"
        if not image.is_file(h5_name):
            raise _NoText(record_id)
        yield image.metadata(record_id), member_file(image, h5_name)

    return _Source(f"image {path.name}", ids, open_record, settings or ExportConfig(), None, close=image.close)


def export_settings(source: Path, *, license_categories: str | None = None,
                    near_duplicates: str | None = None) -> ExportConfig:
    """``export.*`` for this export: the run's (an image: the defaults), with what the command line gives instead."""
    import dataclasses

    from ..core.licenses import check_categories
    from ..core.state import RunDir, load_run

    base = load_run(source)[1].export if source.is_dir() and RunDir(source).run_yaml.is_file() else ExportConfig()
    if license_categories is not None:
        try:
            base = dataclasses.replace(base, license_categories=list(check_categories(license_categories)))
        except ValueError as exc:
            raise UserError(f"--license-categories: {exc}") from None
    if near_duplicates is not None:
        base = dataclasses.replace(base, near_duplicates=near_duplicates)
    return base


def _check_record_ids(ids: list[str], source: Path) -> list[str]:
    """Zenodo's record ids are numbers: rows are deduplicated in their order ("the first by record id"), so a
    folder named otherwise (a record made by ``zenodo-hpc process --id``) cannot be placed, and is refused."""
    odd = [i for i in ids if not _ID.fullmatch(i)]
    if odd:
        raise UserError(f"{source}: the record folder {odd[0][:60]!r} is not named by a Zenodo record id (a number): "
                        "the export orders rows by record id; move it away, then export again")
    return ids


class _NoText(Exception):
    """A record whose h5 holds no text (processed before format 3): collected, then refused all at once."""

    def __init__(self, record_id: str) -> None:
        super().__init__(record_id)
        self.record_id = record_id


def _refuse_without_text(ids: list[str], source: Path) -> None:
    """Stop, naming them, rather than leave records out silently (their text cannot be made from the images)."""
    if not ids:
        return
    named = ", ".join(ids[:20]) + (f" and {len(ids) - 20} more" if len(ids) > 20 else "")
    raise UserError(f"{source}: {len(ids)} record{'s' if len(ids) != 1 else ''} hold no text (processed before "
                    f"zenodo-hpc kept each file's text, h5 format_version 3): {named}; process them again "
                    "(remove their folders under data/: the next zenodo-hpc update finds them missing and "
                    "makes them again)")


# --- one record -> its rows -----------------------------------------------------------------------------------


def _text_field(value: Any) -> str | None:
    """A string the record gives (DOI, title, version), or None: anything else, or too long to be one."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_FIELD_CHARS:
        return None
    return value


def record_fields(record_id: str, metadata: Any) -> dict[str, str | None]:
    """The row fields every file of a record shares, from its Zenodo record (the metadata's ``hit``), each
    checked: ids must be numbers, every other value a string of sensible length, else null."""
    found = metadata.get("hit") if isinstance(metadata, dict) else None
    hit: dict[str, Any] = found if isinstance(found, dict) else {}
    inner: dict[str, Any] = hit["metadata"] if isinstance(hit.get("metadata"), dict) else {}
    concept = _text_field(hit.get("conceptrecid"))
    license_id = record_license(hit)
    return {
        "record_id": record_id,
        "concept_id": concept if concept and _ID.fullmatch(concept) else None,
        "doi": _text_field(hit.get("doi") or inner.get("doi")),
        "concept_doi": _text_field(hit.get("conceptdoi")),
        "version": _text_field(inner.get("version")),
        "title": _text_field(inner.get("title") or hit.get("title")),
        "license": license_id,
        "license_category": license_category(license_id),
    }


def masked_count(metadata: Any) -> int:
    """Credentials masked in the record's files, from its metadata's ``masked`` list (records before: 0)."""
    masked = metadata.get("masked") if isinstance(metadata, dict) else None
    return len(masked) if isinstance(masked, list) else 0


def file_rows(fields: dict[str, str | None], h5_file: Any) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
    """``(row without near_dup_cluster, images)`` of each rasterized file of one record, in the h5's path order,
    one file at a time; each file's bytes are checked against its sha256 as they are read."""
    from .decode import iter_files_h5
    from .organize import file_extension

    for text, array in iter_files_h5(h5_file):
        row = dict(fields, path=text.path, extension=file_extension(text.path), size_bytes=len(text.content),
                   sha256=text.sha256, content=text.content.decode("utf-8", "replace"), n_images=int(array.shape[0]))
        yield row, array


def _rewind(file: Any) -> None:
    if hasattr(file, "seek"):
        file.seek(0)


# --- rows -> Parquet shards -----------------------------------------------------------------------------------


def images_column(arrays: list[np.ndarray], height: int, width: int) -> pa.Array:
    """``list<fixed_size_list<fixed_size_list<uint32>[width]>[height]>`` built from the arrays' bytes at once
    (no Python list per pixel): one flat uint32 buffer, two fixed-size wrappings, one offsets array."""
    import pyarrow as pa

    for array in arrays:
        if array.ndim != 3 or array.shape[1:] != (height, width):
            raise UserError(f"an image array of shape {array.shape} in an export of {height}x{width} images")
    flat = np.concatenate([a.reshape(-1) for a in arrays]).astype(np.uint32, copy=False) if arrays else \
        np.zeros(0, np.uint32)
    inner = pa.FixedSizeListArray.from_arrays(pa.FixedSizeListArray.from_arrays(pa.array(flat), width), height)
    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum([a.shape[0] for a in arrays], out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), inner)


class SplitWriter:
    """The shards of one split: rows buffered up to a row group (ROW_GROUP_ROWS rows or ROW_GROUP_BYTES), a new
    shard every SHARD_BYTES (uncompressed); shards are named ``<split>-<i>.parquet.partial`` until
    :meth:`close` knows their count and renames them ``<split>-<i:05d>-of-<n:05d>.parquet``."""

    def __init__(self, folder: Path, split: str, height: int, width: int) -> None:
        self.folder, self.split, self.height, self.width = folder, split, height, width
        self.schema = parquet_schema(height, width)
        self.rows: list[dict[str, Any]] = []
        self.images: list[np.ndarray] = []
        self.buffered = 0
        self.shard_bytes = 0
        self.partials: list[Path] = []
        self._writer: pq.ParquetWriter | None = None

    def add(self, row: dict[str, Any], images: np.ndarray) -> None:
        self.rows.append(row)
        self.images.append(images)
        self.buffered += images.shape[0] * self.height * self.width * 4 + len(row["content"])
        if len(self.rows) >= ROW_GROUP_ROWS or self.buffered >= ROW_GROUP_BYTES:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one row group (of a new shard when the current one is full)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.rows:
            return
        columns = [pa.array([row[name] for row in self.rows], type=self.schema.field(name).type)
                   for name in COLUMNS if name != "images"]
        columns.insert(COLUMNS.index("images"), images_column(self.images, self.height, self.width))
        table = pa.Table.from_arrays(columns, schema=self.schema)
        if self._writer is None or self.shard_bytes >= SHARD_BYTES:
            self._close_shard()
            path = self.folder / f"{self.split}-{len(self.partials):05d}.parquet.partial"
            self.partials.append(path)
            self._writer = pq.ParquetWriter(path, self.schema, compression=COMPRESSION)
        self._writer.write_table(table, row_group_size=len(self.rows))
        self.shard_bytes += self.buffered
        self.rows, self.images, self.buffered = [], [], 0

    def _close_shard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.shard_bytes = 0

    def close(self) -> list[str]:
        """Flush, close, and give the shards their final names; their paths relative to the export folder."""
        self.flush()
        self._close_shard()
        names = []
        for i, partial in enumerate(self.partials):
            name = f"{self.split}-{i:05d}-of-{len(self.partials):05d}.parquet"
            os.rename(partial, self.folder / name)
            names.append(f"{self.folder.name}/{name}")
        return names


# --- the export -------------------------------------------------------------------------------------------------


@dataclass
class _Tally:
    """What the export counted on its way, for the card and the summary."""

    rows: Counter[str] = field(default_factory=Counter)
    records: Counter[str] = field(default_factory=Counter)
    records_per_license: Counter[str] = field(default_factory=Counter)
    rows_per_license: Counter[str] = field(default_factory=Counter)
    records_per_category: Counter[str] = field(default_factory=Counter)
    license_left_out: Counter[str] = field(default_factory=Counter)
    masked: int = 0
    without_text: list[str] = field(default_factory=list)


def export_dataset(source: str | os.PathLike[str], out: str | os.PathLike[str], *,
                   settings: ExportConfig | None = None, pretty_name: str = "Zenodo-ML",
                   progress: bool | None = None) -> ExportResult:
    """Export ``source`` (a run directory or a squashfs image) as Parquet shards and a dataset card in ``out``.

    ``settings`` (``export.*``): the run's by default (an image: the defaults). Records stream in record-id order,
    file by file: memory holds one file's text and images, a row group per split and the deduplication index
    (docs/export-and-hub.md gives the bound). ``out`` is replaced whole once the new export is complete; it must be
    missing, empty or an earlier export.
    """
    from .dedup import Deduplicator
    from .organize import chmod_shared, swap_into_place

    started = time.monotonic()
    _require_pyarrow()
    out = Path(os.path.abspath(out))
    reader = open_source(Path(source), settings)
    try:
        check_replaceable(out)
        staging = _staging(out)
        try:
            chmod_shared(staging)
            (staging / "data").mkdir()
            dedup = Deduplicator(reader.settings.near_duplicates)
            tally, shards, shape = _write_rows(reader, staging / "data", dedup, progress)
            facts = _facts(reader, tally, shards, dedup, pretty_name, shape)
            (staging / "README.md").write_text(_card(facts), encoding="utf-8")
            check_replaceable(out)
            swap_into_place(staging, out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    finally:
        reader.close()
    return ExportResult(out, dict(tally.rows), dict(tally.records), shards, facts, time.monotonic() - started)


def _require_pyarrow() -> None:
    try:
        import pyarrow.parquet  # noqa: F401 - the writer of every shard
    except ImportError:
        raise UserError(f"the Parquet export needs pyarrow: {INSTALL_HINT}") from None


def _staging(out: Path) -> Path:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as exc:
        raise UserError(f"cannot create {out}: {exc.strerror or exc}") from None


def check_replaceable(out: Path) -> None:
    """``out`` may be replaced: missing, empty, or an earlier export (only a README.md and a data/ folder of
    Parquet shards). Why: the export replaces ``out`` whole, so ``--out ~`` must not delete a home folder."""
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir():
        raise UserError(f"{out} exists and is not a folder (or is a symbolic link): choose another --out")
    try:
        names = sorted(p.name for p in out.iterdir())
        shards = [p for p in (out / "data").iterdir()] if (out / "data").is_dir() else []
    except OSError as exc:
        raise UserError(f"cannot list {out}: {exc.strerror or exc}") from None
    if not names:
        return
    if names != sorted(EXPORT_FILES) or not all(p.is_file() and p.name.endswith(".parquet") for p in shards):
        raise UserError(f"{out} is not empty and is not an earlier export (README.md and data/*.parquet only); "
                        "choose a new or empty folder for --out")


def _write_rows(reader: _Source, data: Path, dedup: Deduplicator, progress: bool | None
                ) -> tuple[_Tally, dict[str, list[str]], tuple[int, int]]:
    """Every record's rows through the license filter, the split and deduplication into its split's shards."""
    from .splits import split_key, split_of

    tally = _Tally()
    writers: dict[str, SplitWriter] = {}
    shape = reader.raster
    for record_id in _progress(reader.ids, progress, reader.label):
        try:
            with reader.open_record(record_id) as (metadata, h5_file):
                fields = record_fields(record_id, metadata)
                license_key = fields["license"] or "none"
                if fields["license_category"] not in reader.settings.license_categories:
                    tally.license_left_out[license_key] += 1
                    continue
                split = split_of(split_key(fields["concept_id"], record_id), reader.settings.splits)
                shape = shape or _h5_shape(h5_file)
                writer = writers.get(split) or writers.setdefault(split, SplitWriter(data, split, *shape))
                rows = _add_record(fields, h5_file, dedup, writer)
        except _NoText as missing:
            tally.without_text.append(missing.record_id)
            continue
        tally.masked += masked_count(metadata)
        tally.records[split] += 1
        tally.rows[split] += rows
        tally.records_per_license[license_key] += 1
        tally.rows_per_license[license_key] += rows
        tally.records_per_category[fields["license_category"] or "none"] += 1
    _refuse_without_text(tally.without_text, Path(reader.label))
    if not tally.rows:
        why = (f"every record has a license of a category not exported (kept: "
               f"{', '.join(reader.settings.license_categories)})" if tally.license_left_out else
               "no record has a rasterized file")
        raise UserError(f"{reader.label}: {why}; nothing to export")
    shards = {split: writers[split].close() for split in sorted(writers, key=_split_order) if tally.rows[split]}
    return tally, shards, shape or (0, 0)


def _add_record(fields: dict[str, str | None], h5_file: Any, dedup: Deduplicator, writer: SplitWriter) -> int:
    """The record's files through deduplication into ``writer``; the rows written."""
    from .decode import NoStoredText

    written = 0
    try:
        for row, images in file_rows(fields, h5_file):
            verdict = dedup.see(row["record_id"], row["path"], row["extension"] or "", row["sha256"],
                                row["content"])
            if verdict.write:
                writer.add(dict(row, near_dup_cluster=verdict.near_dup_cluster), images)
                written += 1
    except NoStoredText:
        raise _NoText(str(fields["record_id"])) from None
    return written


def _h5_shape(h5_file: Any) -> tuple[int, int]:
    """The images' (height, width) an h5 of format 2 or 3 names in its attributes."""
    import h5py

    with h5py.File(h5_file, "r") as h5:
        shape = int(h5.attrs.get("height", 0)), int(h5.attrs.get("width", 0))
    _rewind(h5_file)
    if min(shape) <= 0:
        raise UserError(f"{h5_file}: no image height and width in its attributes")
    return shape


def _split_order(split: str) -> int:
    from .splits import SPLITS

    return SPLITS.index(split)


def _progress(ids: list[str], progress: bool | None, label: str) -> Any:
    from tqdm import tqdm

    show = progress if progress is not None else os.isatty(2)
    return tqdm(ids, desc=f"export {label}", unit="record", disable=not show)


# --- the card and the summary ---------------------------------------------------------------------------------


def _facts(reader: _Source, tally: _Tally, shards: dict[str, list[str]], dedup: Deduplicator, pretty_name: str,
           shape: tuple[int, int]) -> CardFacts:
    from .. import __version__
    from .hf_card import CardFacts

    splits = reader.settings.splits
    return CardFacts(
        pretty_name=pretty_name, source=reader.label, height=shape[0], width=shape[1],
        split_fractions={"train": splits.train, "validation": splits.validation, "test": splits.test},
        data_files=shards, rows={s: tally.rows[s] for s in shards}, records={s: tally.records[s] for s in shards},
        records_per_license=dict(sorted(tally.records_per_license.items())),
        rows_per_license=dict(sorted(tally.rows_per_license.items())),
        records_per_category=dict(sorted(tally.records_per_category.items())),
        license_categories=tuple(reader.settings.license_categories),
        license_left_out=dict(sorted(tally.license_left_out.items())),
        dedup=dedup.stats.as_dict(), near_duplicates=reader.settings.near_duplicates,
        opted_out=reader.opted_out, withdrawn=reader.withdrawn, masked=tally.masked,
        generated=f"zenodo-hpc {__version__}",
    )


def _card(facts: CardFacts) -> str:
    from .hf_card import dataset_card

    return dataset_card(facts)


def format_summary(result: ExportResult) -> str:
    """What ``zenodo-hpc export`` prints: rows per split, what deduplication and the license filter left out,
    then the folder on its own line."""
    facts = result.facts
    dedup = facts.dedup
    found = dedup.get("total")
    total: dict[str, Any] = found if isinstance(found, dict) else {}
    splits = ", ".join(f"{split} {result.rows[split]:,} rows ({result.records[split]:,} records)"
                       for split in result.shards)
    lines = [f"export: {sum(result.rows.values()):,} rows of {sum(result.records.values()):,} records from "
             f"{facts.source} in {result.seconds:.1f} s: {splits}",
             f"deduplication: {total.get('exact_duplicates', 0):,} exact duplicates left out, "
             f"{total.get('near_duplicates', 0):,} near duplicates "
             f"{'left out' if facts.near_duplicates == 'drop' else 'kept, marked by near_dup_cluster'}"]
    if facts.license_left_out:
        left = ", ".join(f"{k} {v}" for k, v in facts.license_left_out.items())
        lines.append(f"left out for their license ({', '.join(facts.license_categories)} exported): "
                     f"{sum(facts.license_left_out.values())} records ({left})")
    if facts.opted_out or facts.withdrawn:
        lines.append(f"left out: {facts.opted_out} records by dataset.exclude, {facts.withdrawn} withdrawn from Zenodo")
    lines.append(str(result.out))
    return "\n".join(lines)
