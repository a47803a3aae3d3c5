"""Pack a finished run into one squashfs image, reproducibly, and verify it.

The image's root is ``<run>/data/``: the record folders plus ``manifest.jsonl`` (per record: id, doi,
files with sha256 and size, segments, source, status), a ``README.md`` dataset card, ``records.jsonl``
and ``run.yaml``. Debian's ``mksquashfs`` builds it with zstd at ``pack.level``, 1 MiB blocks,
root-owned files, no xattrs and fixed timestamps, on every CPU the pack job has, into a temporary name that
is renamed only when complete, so the same run packed twice gives byte-identical images (whatever the
number of CPUs) and a failed pack never leaves a truncated image behind.
Before packing, every done record's files are checked against its done marker (each file's size and
sha256 when the record was made): a record damaged since then is sent back to ``resume`` rather than
packed. The new image is verified before it replaces anything: its listing must match the manifest and
every file must read back with the manifest's sha256 (``unsquashfs -pf``: the whole image in one walk of
its tree; an unsquashfs older than 4.5 extracts it by name, a batch at a time). Only then is it renamed over
the previous image and ``<image>.md5`` and ``<image>.sha256`` written beside it; a failed verification
leaves the previous image and its checksum files as they were.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from .. import __version__
from ..core.config import PACK_MAX_LEVELS, Config
from ..core.errors import UserError
from ..core.markers import DoneMarker
from ..core.state import (
    CARD,
    DONE,
    FIGURES,
    MANIFEST,
    RECORDS,
    RUN_YAML,
    SHARED_FILE_MODE,
    RunDir,
    atomic_write_text,
    file_digest,
    iter_records,
    mark_done,
    mark_for_redo,
    marker,
    read_done,
    read_failure,
    record_outcomes,
    run_yaml_text,
    set_aside,
    sha256_of,
)
from ..record.store import STAGING_PREFIX, images_h5_name, metadata_json_name, record_file_names
from .decode import read_images_h5
from .image import READER_REQUIREMENTS
from .load import load_metadata
from .removals import filter_lines
from .removals import left_out as left_out_of_dataset

# Writes the figures of the dataset card into a folder: (their paths, the card's markdown section linking them).
FigureWriter = Callable[[RunDir, Path, Config], tuple[list[Path], str]]

log = logging.getLogger(__name__)

EXTRAS = (MANIFEST, CARD, RECORDS, RUN_YAML)  # the image root's own files (in data/)
BLOCK_SIZE = "1M"
HASH_CHUNK = 1 << 20
DAMAGED = "damaged_output"  # the failure reason of a done record whose folder no longer matches its marker
CAT_BATCH = 1000  # files per `unsquashfs -cat` (its command line stays far below the system's limit)
SHOWN = 3  # damaged records named in the one-line error


@dataclass
class PackResult:
    image: Path
    records: int
    files: int
    data_bytes: int
    image_bytes: int
    md5: str
    sha256: str
    seconds: float
    partial: bool
    verify_seconds: float = 0.0  # reading every file of the new image back and checking its sha256

    @property
    def ratio(self) -> float:
        return self.data_bytes / self.image_bytes if self.image_bytes else 0.0


def find_mksquashfs() -> str:
    path = shutil.which("mksquashfs")
    if path is None:
        raise UserError("mksquashfs not found: install squashfs-tools (Debian/Ubuntu: apt-get install "
                        "squashfs-tools; on a cluster: module load squashfs-tools, or ask your admins)")
    return path


def check_complete(run: RunDir, allow_partial: bool) -> tuple[set[str], bool]:
    """The ids to pack; refuse while records are pending or failed (not quarantined), unless allowed."""
    status = record_outcomes(run)
    if status.records == 0:
        raise UserError(f"{run.root} has no harvested records to pack")
    failed, quarantined = sum(status.failed.values()), sum(status.quarantined.values())
    unfinished = status.pending + failed
    if unfinished and not allow_partial:
        raise UserError(
            f"{run.root} is not complete: {status.done} done, {failed} failed, {status.pending} pending, "
            f"{quarantined} quarantined of {status.records}; finish it with `zenodo-hpc resume "
            f"{run.root}`, or pack what is there with --allow-partial"
        )
    return status.done_ids, bool(unfinished)


class DamagedRecord(Exception):
    """A done record whose folder does not match its done marker (or does not read whole)."""


def check_done_records(run: RunDir, cfg: Config, done: set[str]) -> tuple[dict[str, list[dict[str, Any]]],
                                                                              dict[str, str]]:
    """Each done record's files (``{name, size, sha256}``, as the manifest lists them), checked against its done
    marker; and the records that are damaged, with what is wrong."""
    files: dict[str, list[dict[str, Any]]] = {}
    damaged: dict[str, str] = {}
    for record_id in sorted(done):
        try:
            files[record_id] = check_record(run, cfg, record_id)
        except DamagedRecord as exc:
            damaged[record_id] = str(exc)
    return files, damaged


def check_record(run: RunDir, cfg: Config, record_id: str) -> list[dict[str, Any]]:
    """A done record's files as they are now, if they are what its marker says it wrote (older markers, without
    the files' checksums: the sizes add up and the h5 reads whole). An unreadable marker is written anew when
    the folder reads whole."""
    folder = run.record_folder(record_id)
    names = record_file_names(record_id, cfg.output.formats)
    found = {name: _digest_or_damage(folder / name) for name in names}
    try:
        done = read_done(run, record_id) or DoneMarker(record_id)
    except UserError as exc:
        done = _rewrite_done_marker(run, cfg, record_id, found, exc)
    if done.outputs:
        for name in names:
            _compare(name, found[name], done.outputs.get(name))
    else:
        check_reads_whole(folder, record_id, cfg, found, done.bytes_written)
    return [{"name": f"{record_id}/{name}", **found[name]} for name in names]


def _digest_or_damage(path: Path) -> dict[str, Any]:
    try:
        sha, size = sha256_of(path)
    except FileNotFoundError:
        raise DamagedRecord(f"{path.name} is missing") from None
    except OSError as exc:
        raise DamagedRecord(f"{path.name} cannot be read ({exc.strerror or exc})") from None
    return {"size": size, "sha256": sha}


def _compare(name: str, found: dict[str, Any], wanted: Any) -> None:
    if not isinstance(wanted, dict):
        raise DamagedRecord(f"{name} is not among the files its done marker lists")
    if found["size"] != wanted.get("size"):
        raise DamagedRecord(f"{name} is {found['size']} bytes, its done marker says {wanted.get('size')}: cut short "
                            "or changed since the record was made")
    if found["sha256"] != wanted.get("sha256"):
        raise DamagedRecord(f"{name} has changed since the record was made (its sha256 differs from the done "
                            "marker's)")


def check_reads_whole(folder: Path, record_id: str, cfg: Config, found: dict[str, dict[str, Any]],
                      bytes_written: Any) -> None:
    """Without checksums to compare: the sizes add up to what the worker wrote, the h5 reads to its last image
    and the metadata JSON parses."""
    total = sum(f["size"] for f in found.values())
    if isinstance(bytes_written, int) and total != bytes_written:
        raise DamagedRecord(f"its files hold {total} bytes, its done marker says {bytes_written} were written")
    try:
        if "h5" in cfg.output.formats:
            read_images_h5(folder / images_h5_name(record_id))
        load_metadata(folder / metadata_json_name(record_id))
    except UserError as exc:
        raise DamagedRecord(str(exc).replace(f"{folder}/", "")) from None


def _rewrite_done_marker(run: RunDir, cfg: Config, record_id: str, found: dict[str, dict[str, Any]],
                         why: UserError) -> DoneMarker:
    """An unreadable done marker: when the folder reads whole, the marker is written anew from it (the bad one
    kept as ``.<id>.json.corrupt``); when it does not, the record is damaged."""
    folder = run.record_folder(record_id)
    try:
        check_reads_whole(folder, record_id, cfg, found, None)
    except DamagedRecord as exc:
        raise DamagedRecord(f"its done marker is unreadable and {exc}") from None
    stats = load_metadata(folder / metadata_json_name(record_id)).get("stats") or {}
    set_aside(marker(run, DONE, record_id))
    mark_done(run, record_id, {"repaired_by": "pack", "repaired_because": str(why),
                               **(stats if isinstance(stats, dict) else {})})
    log.warning("%s; record %s reads whole, so its done marker was written anew", why, record_id)
    return read_done(run, record_id) or DoneMarker(record_id)


def send_back(run: RunDir, damaged: dict[str, str], *, allow_partial: bool) -> None:
    """Damaged records are done no more (failed as ``damaged_output``, so that status says why) and ``resume``
    makes them again; without --allow-partial, packing stops here saying so."""
    for record_id, problem in sorted(damaged.items()):
        mark_for_redo(run, record_id, reason=DAMAGED, message=problem)
        log.warning("record %s is damaged: %s; it is not done any more, `zenodo-hpc resume` makes it again",
                    record_id, problem)
    shown = "; ".join(f"record {i}: {p}" for i, p in sorted(damaged.items())[:SHOWN])
    more = f"; and {len(damaged) - SHOWN} more (logged above)" if len(damaged) > SHOWN else ""
    text = (f"{len(damaged)} done record(s) in {run.data} are damaged ({shown}{more}): they are marked "
            f"{DAMAGED} and `zenodo-hpc resume {run.root}` makes them again")
    if not allow_partial:
        raise UserError(f"{text}; then pack")
    log.warning("%s; packing without them (--allow-partial)", text)


def manifest_entries(run: RunDir, cfg: Config, files: dict[str, list[dict[str, Any]]], *,
                     superseded: set[str] | None = None, gone: set[str] | None = None) -> list[dict[str, Any]]:
    """One entry per harvested record, in manifest order: what is in the image (``files``: the checked done
    records), or why it is not (``superseded``: done, but a newer version of it is in the image instead). A record
    ``gone`` (withdrawn from Zenodo, or excluded: :mod:`zenodo_hpc.dataset.removals`) has no entry at all."""
    entries = []
    for hit in iter_records(run.records):
        record_id = str(hit["id"])
        if gone and record_id in gone:
            continue
        entry: dict[str, Any] = {"id": record_id, "doi": hit.get("doi"),
                                 "title": (hit.get("metadata") or {}).get("title")}
        if record_id in files:
            meta = load_metadata(run.record_folder(record_id) / metadata_json_name(record_id))
            source = meta.get("source") or {}
            entry.update(status="done", files=files[record_id], segments=meta.get("stats", {}).get("segments", 0),
                         source={"kind": source.get("kind"), "url": source.get("url")})
        elif superseded and record_id in superseded:
            entry.update(status="superseded", reason="a newer version is in the image", files=[], segments=0)
        else:
            failure = read_failure(run, record_id)
            status = "pending" if failure is None else "quarantined" if failure.quarantined else "failed"
            entry.update(status=status, reason=failure.reason if failure else None, files=[], segments=0)
        entries.append(entry)
    return entries


# The recipe the card (and docs/formats.md) gives for reading an images h5 with h5py and numpy only. Every index
# is made an int64 or an int first: under numpy 1, a uint64 plus an int is a float64, which cannot slice.
READ_H5_RECIPE = '''import h5py
import numpy as np


def read_images(h5_file):
    """{file path: (n, height, width) uint32 array of code points} of one images_<id>.h5 (a path or a binary file)."""
    with h5py.File(h5_file, "r") as h5:
        paths = h5["files/path"].asstr()[()]
        offset = h5["files/offset"][()].astype(np.int64)  # int64: under numpy 1, uint64 + int is a float
        if h5.attrs.get("format_version", 1) == 1:  # records of older zenodo-hpc: one /segments dataset
            stored, itemsize, start = {1: h5["segments"][()]}, np.ones(len(paths), np.int64), offset[:-1]
        else:  # each file in the narrowest type that holds it: /segments_uint8, _uint16 or _uint32
            stored = {k: h5[f"segments_uint{8 * k}"][()] for k in (1, 2, 4) if f"segments_uint{8 * k}" in h5}
            itemsize = h5["files/itemsize"][()].astype(np.int64)
            start = h5["files/start"][()].astype(np.int64)
        empty = np.zeros((0, int(h5.attrs.get("height", 80)), int(h5.attrs.get("width", 80))), np.uint32)
    images = {}
    for i, path in enumerate(paths):
        n, first = int(offset[i + 1] - offset[i]), int(start[i])
        images[path] = stored[int(itemsize[i])][first:first + n].astype(np.uint32) if n else empty
    return images
'''
H5_LAYOUT = (  # format 3 of images_<id>.h5, as the card describes it (docs/formats.md says the same)
    ("`/segments_uint8`, `/segments_uint16`, `/segments_uint32`", "`(N, height, width)`",
     "the images stored in that type, file after file in path order; a dataset is there only when it holds images"),
    ("`/files/path`", "`(F,)` UTF-8 strings", "the path of every rasterized file, sorted; an empty file is there with "
     "0 images"),
    ("`/files/offset`", "`(F + 1,)` `uint64`", "file `i` has `offset[i + 1] - offset[i]` images"),
    ("`/files/itemsize`", "`(F,)` `uint8`", "1, 2 or 4: file `i`'s images are in `/segments_uint{8 * itemsize[i]}`"),
    ("`/files/start`", "`(F,)` `uint64`", "the index of file `i`'s first image in that dataset"),
    ("`/files/content`", "`(C,)` `uint8`", "the bytes of every rasterized file, one after the other in path order: the "
     "text its images were made from, credentials masked"),
    ("`/files/content_offset`", "`(F + 1,)` `uint64`", "file `i`'s bytes are "
     "`content[content_offset[i]:content_offset[i + 1]]`"),
    ("`/files/sha256`", "`(F, 32)` `uint8`", "the sha256 digest of those bytes (the file's `sha256` in the metadata)"),
    ("attributes of `/`", "", "`format` (`zenodo-hpc-images`), `format_version`, `record_id`, `compression`, "
     "`width`, `height`, `pad` (the padding code point, 32: a space), `tab_width`"),
)


def dataset_card(run: RunDir, cfg: Config, entries: list[dict[str, Any]], extra: str = "",
                 image_name: str | None = None) -> str:
    """README.md of the image, for whoever downloads it without zenodo-hpc: what the data is, counts, how to check,
    mount or read it with common tools, every file's layout, how it was made. ``extra`` (which release it is and
    what changed, the figures) goes after the counts; ``image_name`` is the file name the commands use (a
    release's versioned name; the image's own by default)."""
    done = [e for e in entries if e["status"] == "done"]
    image = image_name or cfg.pack.image
    record = str(done[0]["id"]) if done else "<id>"
    extra = f"{extra.rstrip()}\n\n" if extra.strip() else ""
    return (_card_summary(run, cfg, entries, done) + extra + _card_opening(cfg, image, record, done)
            + _card_files(cfg) + _card_reading(cfg, image, record) + _card_provenance(cfg))


def _card_summary(run: RunDir, cfg: Config, entries: list[dict[str, Any]], done: list[dict[str, Any]]) -> str:
    reasons: dict[str, int] = {}
    for e in entries:
        if e["status"] != "done":
            key = f"{e['status']}: {e.get('reason') or 'not processed'}"
            reasons[key] = reasons.get(key, 0) + 1
    missing = "".join(f"\n| {k} | {v} |" for k, v in sorted(reasons.items())) or "\n| (none) | 0 |"
    width, height = cfg.raster.width, cfg.raster.height
    return f"""# Zenodo-ML code images ({run.root.name})

Software records from Zenodo, their archived code turned into {width}x{height} "code images": one pixel per
character, its value the character's Unicode code point (lines cut at {width} characters and padded with
spaces, {height} lines per image). One folder per record with its images, its file tree and its Zenodo
metadata. Made with zenodo-hpc {__version__}; this card says all you need to check, open and read it with
common tools.

| | |
|---|---|
| records harvested | {len(entries)} |
| records in this image | {len(done)} |
| code images ({width}x{height}) | {sum(e["segments"] for e in done)} |

Records not in the image:

| status: reason | records |
|---|---|{missing}

"""


def _card_opening(cfg: Config, image: str, record: str, done: list[dict[str, Any]]) -> str:
    """Check the checksums, then mount (squashfuse, or root) or extract the image."""
    size = sum(f["size"] for e in done for f in e["files"]) / 1e6
    return f"""## Check it

In the folder that holds `{image}` and its checksum files, as you downloaded them (each says `{image}: OK`):

```sh
md5sum -c {image}.md5
sha256sum -c {image}.sha256
```

## Open it

`{image}` is a read-only squashfs file system ({cfg.pack.compression}, 1 MiB blocks). Mount it without root with
squashfuse (Debian and Ubuntu: `apt-get install squashfuse`; on a cluster often a module):

```sh
mkdir -p zenodo-ml && squashfuse {image} zenodo-ml
```

and unmount it with `fusermount3 -u zenodo-ml` (`fusermount -u zenodo-ml` with FUSE 2). As root, the kernel
mounts it itself (`umount zenodo-ml` after):

```sh
mkdir -p zenodo-ml && mount -t squashfs -o loop,ro {image} zenodo-ml
```

Or extract the records you name (`unsquashfs` of squashfs-tools; without ids, all of it: {size:.1f} MB):

```sh
unsquashfs -d zenodo-ml {image} {record}
```

Either way `zenodo-ml/` holds the files below. Python can also read them straight out of `{image}`, without
mounting or extracting it (below).

"""


def _card_files(cfg: Config) -> str:
    """Every file of the image and the layout of the h5 and of the metadata."""
    if cfg.output.h5_compression.startswith("zstd"):
        filters = ("with zstd, an HDF5 plugin filter: `python -m pip install hdf5plugin` and `import hdf5plugin` "
                   "before reading them")
    else:
        filters = f"with {cfg.output.h5_compression.split('-')[0]}, which every h5py reads"
    files = [("`<id>/images_<id>.h5`", "every code image of the record (HDF5, below)"),
             *([("`<id>/images_<id>.pkl`", "the 2018 layout: a pickled `dict` of file path -> `list` of (height, "
                 "width) `int32` arrays (unpickle it only from an image you trust)")]
               if "pkl" in cfg.output.formats else []),
             ("`<id>/metadata_<id>.json`", "the record's metadata (below); `metadata_<id>.pkl` is the same dict, "
              "pickled"),
             ("`manifest.jsonl`", "one JSON line per harvested record: `id`, `doi`, `title`, `status` (`done`: in "
              "this image; else `failed`, `quarantined`, `superseded` or `pending`, with its `reason`), `files` (each "
              "`name`, `size`, `sha256`), `segments` (its images), `source`"),
             ("`records.jsonl`", "the harvested Zenodo records, one per line, as Zenodo's API returned them"),
             ("`run.yaml`", "the configuration that made the image (also at the end of this card)"),
             ("`README.md`", "this card")]
    return f"""## Files

{_table(("path", "what"), files)}

### `<id>/images_<id>.h5`

One HDF5 file per record (h5py 3 reads it). Each file's images are stored in the narrowest unsigned type that
holds its largest code point, in chunks of 64 images, compressed {filters}:

{_table(("object", "shape, type", "meaning"), H5_LAYOUT)}

`format_version` is 3. Records made by older zenodo-hpc versions (kept as they were) have version 2 (the same
without `content`, `content_offset` and `sha256`: no text) or 1: one `/segments` dataset in the record's widest
type, file `i`'s images `segments[offset[i]:offset[i + 1]]`, and no `itemsize` or `start`. The recipe below reads
the images of all three.

### `<id>/metadata_<id>.json`

One line of JSON: `hit` (the Zenodo record, as its API returned it), `tree` (every folder and file of the
record's code: `{{"type": "dir", "children": {{name: node}}}}`, a file with its `size`, `sha256` and
`segments` (its images), or `skipped` and why), `source` (where the code came from: `kind` `zenodo` or
`github`, `url`, the `archives` and `loose` files with their md5 `checksum`, what was `not_fetched`), `stats`
(`files`, `rasterized`, `skipped` by reason, `segments`, `bytes_rasterized`, `masked`), `tool` (the zenodo-hpc
version and the sha256 of its configuration) and `masked`: the credentials found in the code (`kind`, `file`,
`line`; never the value). Their characters were replaced one for one by `*` before rasterizing, so no file of
this image holds them; a file with credentials masked has the `size` and `sha256` of its masked text.

"""


def _card_reading(cfg: Config, image: str, record: str) -> str:
    """The recipes: h5py and numpy on the opened image; PySquashfsImage without opening it; zenodo-hpc."""
    plugin = cfg.output.h5_compression.startswith("zstd")
    needs = "h5py numpy" + (" hdf5plugin" if plugin else "")
    recipe = READ_H5_RECIPE.replace("import h5py\n", "import h5py\nimport hdf5plugin  # the zstd filter\n") \
        if plugin else READ_H5_RECIPE
    return f"""## Read it with h5py and numpy

Any numpy, 1.x or 2.x; then, beside the mounted or extracted `zenodo-ml/`:

```sh
python -m pip install {needs}
```

```python
import json

{recipe}

RECORD = "{record}"  # any id of manifest.jsonl whose status is "done"
images = read_images(f"zenodo-ml/{{RECORD}}/images_{{RECORD}}.h5")  # {{file path: (n, height, width) array}}
with open(f"zenodo-ml/{{RECORD}}/metadata_{{RECORD}}.json", encoding="utf-8") as file:
    meta = json.load(file)
print(meta["hit"]["metadata"]["title"], {{path: array.shape for path, array in images.items()}})
```

An image's rows are the file's lines and each value a character: `chr(images[path][k, row, column])`.

## Read it without mounting

PySquashfsImage reads squashfs in pure Python, and zstandard decompresses its blocks:

```sh
python -m pip install {needs} {READER_REQUIREMENTS}
```

then, with `read_images` from above, in the folder that holds `{image}`:

```python
import io

from PySquashfsImage import SquashFsImage

with SquashFsImage.from_file("{image}") as image:
    manifest = [json.loads(line) for line in image.select("manifest.jsonl").read_text().splitlines()]
    in_image = [entry["id"] for entry in manifest if entry["status"] == "done"]
    RECORD = in_image[0]
    images = read_images(io.BytesIO(image.select(f"{{RECORD}}/images_{{RECORD}}.h5").read_bytes()))
    meta = json.loads(image.select(f"{{RECORD}}/metadata_{{RECORD}}.json").read_bytes())
```

## Read it with zenodo-hpc

zenodo-hpc, which made the image, reads it too (also the pickles, safely, and the 2018 dataset). It is not on
PyPI: install it from its source repository, in the repository's folder (the `image` extra reads images
without mounting them):

```sh
python -m pip install ".[image]"
```

or build a wheel there and install that wherever you like:

```sh
python -m pip wheel --no-deps -w dist .
python -m pip install "dist/zenodo_hpc-{__version__}-py3-none-any.whl[image]"
```

then:

```python
from zenodo_hpc.load import load_images, load_metadata

images = load_images("{image}:{record}")  # {{file path: (n, height, width) uint32 array}}, without mounting
meta = load_metadata("zenodo-ml/{record}")  # or from the mounted or extracted folder
```

"""


def _table(header: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> str:
    """A markdown table."""
    lines = [header, tuple("---" for _ in header), *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def _card_provenance(cfg: Config) -> str:
    config_text = yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip()
    return f"""## How it was made

`zenodo-hpc harvest` listed the records, `zenodo-hpc submit` rasterized them in SLURM job arrays (or
local processes), `zenodo-hpc pack` built this image with `mksquashfs {" ".join(compression_options(cfg))} -b 1M
-all-root -no-xattrs` and fixed timestamps: packing the same run again gives the same bytes.

```yaml
{config_text}
```
"""


def write_extras(run: RunDir, cfg: Config, entries: list[dict[str, Any]], card_extra: str = "",
                 figures: FigureWriter | None = None, image_name: str | None = None,
                 gone: set[str] | None = None) -> list[str]:
    """The image root's own files, written atomically into ``<run>/data/``; their names.

    With ``figures`` (the report's :func:`zenodo_hpc.report.card_figures`, handed in by the commands that
    pack), figures about the data go into ``figures/`` and the dataset card links them, so that the
    dataset's page on Kaggle or Zenodo can show them.
    """
    run.data.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.manifest,
                      "".join(json.dumps(e, ensure_ascii=False, sort_keys=True) + "\n" for e in entries))
    figure_files, figure_section = _card_figures(run, cfg, figures)
    atomic_write_text(run.card, dataset_card(run, cfg, entries, card_extra + figure_section, image_name))
    if gone:  # the image's copy of records.jsonl holds no record that left the dataset
        with open(run.records, "rb") as source, open(run.in_image(f".{RECORDS}.tmp"), "wb") as target:
            target.writelines(filter_lines(source, gone))
    else:
        shutil.copyfile(run.records, run.in_image(f".{RECORDS}.tmp"))
    os.replace(run.in_image(f".{RECORDS}.tmp"), run.in_image(RECORDS))
    atomic_write_text(run.in_image(RUN_YAML), run_yaml_text(cfg))
    return list(EXTRAS) + figure_files


def _card_figures(run: RunDir, cfg: Config, figures: FigureWriter | None) -> tuple[list[str], str]:
    """The figures about the data in ``data/figures/`` and the card's section linking them; none (and no
    folder) without a writer, or when it wrote none (the ``report`` extra is not installed)."""
    folder = run.figures
    paths, section = figures(run, folder, cfg) if figures is not None else ([], "")
    if not paths:
        shutil.rmtree(folder, ignore_errors=True)
        return [], ""
    return [f"{FIGURES}/{p.name}" for p in paths], section


def excluded_entries(run: RunDir, done: set[str], extras: list[str] | None = None) -> list[str]:
    """Top-level entries of ``data/`` that are not part of the image: staging leftovers, records not done
    (or left out of a release: superseded)."""
    top = {name.split("/", 1)[0] for name in (extras if extras is not None else EXTRAS)}
    out = []
    for entry in sorted(os.listdir(run.data)):
        if entry.startswith(STAGING_PREFIX) or (entry not in top and entry not in done):
            out.append(entry)
    return out


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity (a SLURM job's cgroup or cpuset, taskset), no more than
    ``$SLURM_CPUS_PER_TASK`` in a SLURM job; mksquashfs by itself would start a thread per CPU of the node."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity on this system
        cpus = os.cpu_count() or 1
    given = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if given.isdigit() and int(given) > 0:
        cpus = min(cpus, int(given))
    return max(1, cpus)


def compression_options(cfg: Config) -> list[str]:
    """``-comp`` and the level (zstd, gzip and lzo have levels; xz and lz4 none)."""
    options = ["-comp", cfg.pack.compression]
    if cfg.pack.compression in PACK_MAX_LEVELS:
        options += ["-Xcompression-level", str(cfg.pack.level)]
    return options


def mksquashfs_command(mksquashfs: str, source: Path, target: Path, cfg: Config, exclude_file: Path,
                       progress: bool) -> list[str]:
    """The mksquashfs call: the image's bytes depend on the data and the compression options only, never on the
    number of processors (checked by tests/dataset/test_pack.py)."""
    return [mksquashfs, str(source), str(target), "-noappend", *compression_options(cfg), "-b", BLOCK_SIZE,
            "-all-root", "-no-xattrs", "-mkfs-time", "0", "-all-time", "0", "-ef", str(exclude_file),
            "-progress" if progress else "-no-progress", "-processors", str(usable_cpus())]


def build_image(run: RunDir, cfg: Config, done: set[str], *, progress: bool, extras: list[str] | None = None) -> Path:
    """mksquashfs into a temporary file beside the image (hidden): the caller verifies it before it replaces
    anything, and removes it in any case."""
    mksquashfs = find_mksquashfs()
    image = run.image(cfg.pack.image)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{image.name}.", suffix=".tmp", dir=run.root)
    os.close(fd)
    tmp = Path(tmp_name)
    exclude = run.pack_exclude
    atomic_write_text(exclude, "".join(f"{e}\n" for e in excluded_entries(run, done, extras)))
    command = mksquashfs_command(mksquashfs, run.data, tmp, cfg, exclude, progress)
    try:
        proc = subprocess.run(command, stdout=None if progress else subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, check=False)
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout or "").strip().splitlines()
            raise UserError(f"mksquashfs failed ({proc.returncode}): {detail[-1] if detail else 'no message'}")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def install_image(tmp: Path, image: Path) -> tuple[str, str]:
    """Put a verified image in place, then its ``.md5`` and ``.sha256``: digests of the very bytes verified."""
    md5, sha, _ = file_digest(tmp)
    os.chmod(tmp, SHARED_FILE_MODE)
    os.replace(tmp, image)
    atomic_write_text(image.with_name(image.name + ".md5"), f"{md5}  {image.name}\n")
    atomic_write_text(image.with_name(image.name + ".sha256"), f"{sha}  {image.name}\n")
    return md5, sha


def _unsquashfs() -> str:
    path = shutil.which("unsquashfs")
    if path is None:
        raise UserError("unsquashfs not found: install squashfs-tools")
    return path


def image_sizes(image: Path) -> dict[str, int]:
    """Every regular file in the image with its size (``unsquashfs -lls``, which comes with mksquashfs)."""
    out = subprocess.run([_unsquashfs(), "-lls", "-d", "", str(image)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise UserError(f"{image}: unsquashfs cannot list it: {out.stderr.strip()[:200]}")
    files = {}
    for line in out.stdout.splitlines():
        if line.startswith("-"):  # a regular file: "-rw-r--r-- root/root  1234 1970-01-01 00:00 path"
            fields = line.split(None, 5)
            files[fields[5].lstrip("/")] = int(fields[2])
    return files


def image_listing(image: Path) -> set[str]:
    """Every regular file in the image, by path."""
    return set(image_sizes(image))


def expected_files(run: RunDir, entries: list[dict[str, Any]],
                   extras: list[str] | None = None) -> dict[str, tuple[int, str]]:
    """What the image must hold, path -> (size, sha256): every done record's files as the manifest lists them,
    and the image root's own files."""
    expected = {f["name"]: (f["size"], f["sha256"]) for e in entries for f in e["files"]}
    for name in extras if extras is not None else EXTRAS:
        sha, size = sha256_of(run.in_image(name))
        expected[name] = (size, sha)
    return expected


def verify_image(image: Path, expected: dict[str, tuple[int, str]]) -> None:
    """The image holds exactly the expected files, each of the expected size, and each reads back with the
    expected sha256. Raises UserError saying what differs.

    Why one pass: naming files to unsquashfs makes it look each one up from the image's root, whose folder
    per record makes that quadratic (hours at Zenodo's scale). ``unsquashfs -pf`` (squashfs-tools 4.5 and
    later) instead walks the tree once and streams every file out in its listing's order; older ones fall
    back to extracting a batch of names at a time."""
    help_text = _unsquashfs_help()
    if "-pf" in help_text:
        log.info("verifying %d files of %s in one pass (unsquashfs -pf)", len(expected), image)
        _verify_in_one_pass(image, expected)
        return
    read_back = _read_back_by_cat if "-cat" in help_text else _read_back_by_extracting
    log.info("verifying %d files of %s by name, %d at a time (%s: this unsquashfs has no -pf)", len(expected),
             image, CAT_BATCH, "unsquashfs -cat" if "-cat" in help_text else "extracting them")
    _verify_by_name(image, expected, read_back)


def _check_listing(listed: dict[str, int], expected: dict[str, tuple[int, str]]) -> None:
    """The image's regular files are the expected ones, each of the expected size."""
    if listed.keys() != expected.keys():
        missing, extra = sorted(expected.keys() - listed.keys()), sorted(listed.keys() - expected.keys())
        raise UserError(f"it does not hold what the manifest lists: missing {missing[:3]}, unexpected {extra[:3]}")
    for name, (size, _) in expected.items():
        if listed[name] != size:
            raise UserError(f"{name} is {listed[name]} bytes in it, {size} in the manifest")


def _check_digest(name: str, sha: str, wanted: str) -> None:
    if sha != wanted:
        raise UserError(f"{name} reads back different from the file packed (sha256 {sha[:16]}..., the "
                        f"manifest says {wanted[:16]}...)")


def _verify_by_name(image: Path, expected: dict[str, tuple[int, str]],
                    read_back: Callable[[Path, list[str], list[int]], list[str]]) -> None:
    """The older way: list the image, then read its files back by name, ``CAT_BATCH`` at a time."""
    _check_listing(image_sizes(image), expected)
    names = sorted(expected)
    for start in range(0, len(names), CAT_BATCH):
        batch = names[start:start + CAT_BATCH]
        for name, sha in zip(batch, read_back(image, batch, [expected[n][0] for n in batch]), strict=True):
            _check_digest(name, sha, expected[name][1])


PSEUDO_DATA_START = b"# START OF DATA - DO NOT MODIFY\n"  # unsquashfs -pf: the file data follows "#\n"


def _verify_in_one_pass(image: Path, expected: dict[str, tuple[int, str]]) -> None:
    """``unsquashfs -pf``: a listing of every entry (a regular file's with its size and offset), then every
    regular file's bytes one after the other in that order, hashed as they stream by (one file chunk in
    memory at a time)."""
    with tempfile.TemporaryFile() as stderr:  # a file, not a pipe: a damaged image's many errors never block it
        proc = subprocess.Popen([_unsquashfs(), "-no-progress", "-pf", "/dev/stdout", str(image)],
                                stdout=subprocess.PIPE, stderr=stderr)
        assert proc.stdout is not None
        stdout = proc.stdout

        def errors() -> str:
            stdout.close()  # unsquashfs stops at its next write, if it has not stopped yet
            proc.wait()
            stderr.seek(0)
            return stderr.read().decode(errors="replace").strip()[:200]
        try:
            files = _pseudo_listing(stdout, errors)
            _check_listing(dict(files), expected)
            for name, size in files:
                _check_digest(name, _hash_stream(stdout, name, size, errors), expected[name][1])
            trailing = stdout.read(1)
        finally:
            stdout.close()  # stopped at the first difference: unsquashfs stops at its next write
            proc.wait()
        if proc.returncode != 0 or trailing:
            raise UserError(f"unsquashfs -pf failed ({proc.returncode}): {errors() or 'more bytes than listed'}")


def _pseudo_listing(stream: IO[bytes], errors: Callable[[], str]) -> list[tuple[str, int]]:
    """``(path, size)`` of every regular file in the listing ``unsquashfs -pf`` writes before the data, in
    the order their bytes follow (a line: ``path R time mode uid gid size offset``, with ``\\`` escaping
    spaces and quotes in the path)."""
    files: list[tuple[str, int]] = []
    offset = 0
    for line in iter(stream.readline, b""):
        if line == PSEUDO_DATA_START:
            stream.readline()  # "#"
            return files
        if line.startswith(b"#"):
            continue
        name, fields = _pseudo_name(line.rstrip(b"\n").decode("utf-8", errors="surrogateescape"))
        if fields[:1] == ["R"]:
            if len(fields) < 7 or not (fields[5].isdigit() and fields[6].isdigit()):
                raise UserError(f"unsquashfs -pf wrote {line[:100]!r}, not a file's line: "
                                f"{errors() or 'the image is damaged'}")
            size, at = int(fields[5]), int(fields[6])
            if at != offset:
                raise UserError(f"unsquashfs -pf lists {name} at byte {at} of its data, not {offset}")
            files.append((name, size))
            offset += size
    raise UserError(f"unsquashfs -pf ended before its data: {errors() or 'the image is damaged or incomplete'}")


def _pseudo_name(line: str) -> tuple[str, list[str]]:
    """A pseudo file line's path (unescaped) and its other fields."""
    name, i = [], 0
    while i < len(line) and line[i] != " ":
        if line[i] == "\\" and i + 1 < len(line):
            i += 1
        name.append(line[i])
        i += 1
    return "".join(name).lstrip("/"), line[i:].split()


def _hash_stream(stream: IO[bytes], name: str, size: int, errors: Callable[[], str]) -> str:
    """The sha256 of the next ``size`` bytes of a stream of files, read a chunk at a time."""
    digest, left = hashlib.sha256(), size
    while left:
        block = stream.read(min(left, HASH_CHUNK))
        if not block:
            raise UserError(f"{name} reads back short ({size - left} of {size} bytes): {errors()}")
        digest.update(block)
        left -= len(block)
    return digest.hexdigest()


def _unsquashfs_help() -> str:
    """What this unsquashfs can do: 4.5 and later stream files out (``-cat``, ``-pf``); older ones only extract."""
    out = subprocess.run([_unsquashfs(), "-help"], capture_output=True, text=True, check=False)
    return out.stdout + out.stderr


def _read_back_by_cat(image: Path, names: list[str], sizes: list[int]) -> list[str]:
    """The sha256 of each file as ``unsquashfs -cat`` streams them out, one after the other, in this order."""
    proc = subprocess.Popen([_unsquashfs(), "-cat", str(image), *names], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    digests = []
    with proc.stdout, proc.stderr:
        for name, size in zip(names, sizes, strict=True):
            digests.append(_hash_stream(proc.stdout, name, size, _reader(proc.stderr)))
        trailing = proc.stdout.read(1)
        errors = proc.stderr.read().decode(errors="replace").strip()
    if proc.wait() != 0 or trailing:
        raise UserError(f"unsquashfs -cat failed ({proc.returncode}): {errors[:200] or 'more bytes than listed'}")
    return digests


def _reader(stream: IO[bytes]) -> Callable[[], str]:
    """What a finished process wrote on this pipe, as the start of an error message."""
    return lambda: stream.read().decode(errors="replace").strip()[:200]


def _read_back_by_extracting(image: Path, names: list[str], sizes: list[int]) -> list[str]:
    """The same from an older unsquashfs: extract this batch to a temporary folder, hash, remove it."""
    with tempfile.TemporaryDirectory(prefix="zenodo-hpc-verify-") as tmp:
        out = subprocess.run([_unsquashfs(), "-n", "-d", f"{tmp}/x", str(image), *names], capture_output=True,
                             text=True, check=False)
        if out.returncode != 0:
            raise UserError(f"unsquashfs cannot extract files: {out.stderr.strip()[:200]}")
        return [sha256_of(Path(tmp) / "x" / name)[0] for name in names]


def pack(run: RunDir, cfg: Config, *, allow_partial: bool = False, progress: bool | None = None,
         card_extra: str = "", exclude: Iterable[str] = (), figures: FigureWriter | None = None,
         image_name: str | None = None) -> PackResult:
    """Check every done record, build the image, verify every file of it, and only then put it in place.

    ``exclude``: done records left out of the image (a release leaves out versions superseded by a newer
    one; their folders stay in ``data/``). Records withdrawn from Zenodo or named by ``dataset.exclude`` are always
    left out, of the manifest and the image's ``records.jsonl`` too. ``card_extra``: markdown the dataset card
    shows (the release).
    ``figures``: writes the figures the card links (the commands hand in the report's ``card_figures``;
    this module draws nothing itself). ``image_name``: the file name the card's commands use, when the image is
    published under another name than its own (a release's ``zenodo-ml-<version>.sqsh``).
    """
    started = time.monotonic()
    find_mksquashfs()
    done, partial = check_complete(run, allow_partial)
    gone = set(left_out_of_dataset(run, cfg))  # withdrawn from Zenodo or named by dataset.exclude
    left_out = set(exclude) | gone
    files, damaged = check_done_records(run, cfg, done - left_out)
    if damaged:
        send_back(run, damaged, allow_partial=allow_partial)
        partial = True
    entries = manifest_entries(run, cfg, files, superseded=left_out - gone, gone=gone)
    extras = write_extras(run, cfg, entries, card_extra, figures, image_name, gone)
    show = sys.stderr.isatty() if progress is None else progress
    expected = expected_files(run, entries, extras)
    data_bytes = sum(size for size, _ in expected.values())
    image = run.image(cfg.pack.image)
    log.info("packing %d records (%d bytes) into %s", len(files), data_bytes, image)
    tmp = build_image(run, cfg, set(files), progress=show, extras=extras)
    try:
        verifying = time.monotonic()
        try:
            verify_image(tmp, expected)
        except UserError as exc:
            kept = f"{image} and its checksum files are left as they were" if image.exists() else "no image written"
            raise UserError(f"the new image failed verification: {exc}; {kept}") from None
        verify_seconds = time.monotonic() - verifying
        md5, sha = install_image(tmp, image)
    finally:
        tmp.unlink(missing_ok=True)
    return PackResult(image, len(files), len(expected), data_bytes, image.stat().st_size, md5, sha,
                      time.monotonic() - started, partial, verify_seconds)


def format_summary(result: PackResult) -> str:
    rate = result.data_bytes / 1e6 / result.seconds if result.seconds else 0.0
    part = " (partial: --allow-partial)" if result.partial else ""
    return (f"pack: {result.image} ({result.image_bytes / 1e6:.1f} MB) holds {result.records} records{part}, "
            f"{result.files} entries, {result.data_bytes / 1e6:.1f} MB of data, ratio {result.ratio:.2f}, "
            f"{rate:.1f} MB/s; md5 {result.md5}; verified")
