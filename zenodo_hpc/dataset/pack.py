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
every file must read back (``unsquashfs -cat``) with the manifest's sha256. Only then is it renamed over
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
from typing import Any

import yaml

from .. import __version__
from ..core.config import PACK_MAX_LEVELS, Config
from ..core.errors import UserError
from ..core.state import (
    DONE,
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
from .load import load_metadata

# Writes the figures of the dataset card into a folder: (their paths, the card's markdown section linking them).
FigureWriter = Callable[[RunDir, Path, Config], tuple[list[Path], str]]

log = logging.getLogger(__name__)

EXTRAS = ("manifest.jsonl", "README.md", "records.jsonl", "run.yaml")
FIGURES = "figures"  # the report's figures about the data, linked from README.md (with the report extra)
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
        done = read_done(run, record_id) or {}
    except UserError as exc:
        done = _rewrite_done_marker(run, cfg, record_id, found, exc)
    outputs = done.get("outputs")
    if isinstance(outputs, dict) and outputs:
        for name in names:
            _compare(name, found[name], outputs.get(name))
    else:
        check_reads_whole(folder, record_id, cfg, found, done.get("bytes_written"))
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
                         why: UserError) -> dict[str, Any]:
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
    return read_done(run, record_id) or {}


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
                     superseded: set[str] | None = None) -> list[dict[str, Any]]:
    """One entry per harvested record, in manifest order: what is in the image (``files``: the checked done
    records), or why it is not (``superseded``: done, but a newer version of it is in the image instead)."""
    entries = []
    for hit in iter_records(run.records):
        record_id = str(hit["id"])
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
            failure = read_failure(run, record_id) or {}
            status = "quarantined" if failure.get("quarantined") else "failed" if failure else "pending"
            entry.update(status=status, reason=failure.get("reason"), files=[], segments=0)
        entries.append(entry)
    return entries


def dataset_card(run: RunDir, cfg: Config, entries: list[dict[str, Any]], extra: str = "") -> str:
    """README.md of the image: what the data is, counts, how it was made, how to mount and load it;
    ``extra`` (which release it is and what changed, the figures) goes after the counts."""
    done = [e for e in entries if e["status"] == "done"]
    reasons: dict[str, int] = {}
    for e in entries:
        if e["status"] != "done":
            key = f"{e['status']}: {e.get('reason') or 'not processed'}"
            reasons[key] = reasons.get(key, 0) + 1
    segments = sum(e["segments"] for e in done)
    image = cfg.pack.image
    missing = "".join(f"\n| {k} | {v} |" for k, v in sorted(reasons.items())) or "\n| (none) | 0 |"
    config_text = yaml.safe_dump(cfg.to_dict(), sort_keys=False).rstrip()
    pkl_line = ("- `<id>/images_<id>.pkl`: the 2018 layout, `dict[path] -> list of (80, 80) int32 arrays`.\n"
                if "pkl" in cfg.output.formats else "")
    extra = f"{extra.rstrip()}\n\n" if extra.strip() else ""
    return f"""# Zenodo-ML code images ({run.root.name})

Software records from Zenodo, their archived code turned into 80x80 "code images": one pixel per
character, its value the character's Unicode code point (lines cut at 80 characters and padded with
spaces, 80 lines per image). One folder per record with its images, its file tree and its Zenodo
metadata. Made with zenodo-hpc {__version__}.

| | |
|---|---|
| records harvested | {len(entries)} |
| records in this image | {len(done)} |
| code images (80x80) | {segments} |

Records not in the image:

| status: reason | records |
|---|---|{missing}

{extra}## Files

- `<id>/images_<id>.h5`: all images of a record, each file in the narrowest integer type (`/files/path`,
  `/files/offset`; zenodo-hpc's `load_images` or the layout in its docs/formats.md).
{pkl_line}
- `<id>/metadata_<id>.json` and `.pkl`: `hit` (the Zenodo record), `tree` (every file with size, sha256,
  image count or skip reason), `source`, `stats`, `tool`.
- `manifest.jsonl`: one line per harvested record: id, doi, status, files with sha256 and size.
- `records.jsonl`: the harvested Zenodo records; `run.yaml`: the configuration used (below).

## Use

Mount it (no root needed with squashfuse), then load records with zenodo-hpc or plain h5py:

    squashfuse {image} zenodo-ml/            # or: sudo mount -t squashfs -o loop,ro {image} /mnt/zenodo-ml
    python -c "from zenodo_hpc.load import load_images; print(load_images('zenodo-ml/<id>'))"

Or read it without mounting (`pip install 'zenodo-hpc[image]'`):

    from zenodo_hpc.load import load_images
    images = load_images("{image}:<id>/images_<id>.h5")

Check it first: `md5sum -c {image}.md5`.

## How it was made

`zenodo-hpc harvest` listed the records, `zenodo-hpc submit` rasterized them in SLURM job arrays (or
local processes), `zenodo-hpc pack` built this image with `mksquashfs {" ".join(compression_options(cfg))} -b 1M
-all-root -no-xattrs` and fixed timestamps: packing the same run again gives the same bytes.

```yaml
{config_text}
```
"""


def write_extras(run: RunDir, cfg: Config, entries: list[dict[str, Any]], card_extra: str = "",
                 figures: FigureWriter | None = None) -> list[str]:
    """The image root's own files, written atomically into ``<run>/data/``; their names.

    With ``figures`` (the report's :func:`zenodo_hpc.report.card_figures`, handed in by the commands that
    pack), figures about the data go into ``figures/`` and the dataset card links them, so that the
    dataset's page on Kaggle or Zenodo can show them.
    """
    run.data.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.data / "manifest.jsonl",
                      "".join(json.dumps(e, ensure_ascii=False, sort_keys=True) + "\n" for e in entries))
    figures = _card_figures(run, cfg, figures)
    atomic_write_text(run.data / "README.md", dataset_card(run, cfg, entries, card_extra + figures[1]))
    shutil.copyfile(run.records, run.data / ".records.jsonl.tmp")
    os.replace(run.data / ".records.jsonl.tmp", run.data / "records.jsonl")
    atomic_write_text(run.data / "run.yaml", run_yaml_text(cfg))
    return list(EXTRAS) + figures[0]


def _card_figures(run: RunDir, cfg: Config, figures: FigureWriter | None) -> tuple[list[str], str]:
    """The figures about the data in ``data/figures/`` and the card's section linking them; none (and no
    folder) without a writer, or when it wrote none (the ``report`` extra is not installed)."""
    folder = run.data / FIGURES
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
    number of processors (checked by tests/test_pack.py)."""
    return [mksquashfs, str(source), str(target), "-noappend", *compression_options(cfg), "-b", BLOCK_SIZE,
            "-all-root", "-no-xattrs", "-mkfs-time", "0", "-all-time", "0", "-ef", str(exclude_file),
            "-progress" if progress else "-no-progress", "-processors", str(usable_cpus())]


def build_image(run: RunDir, cfg: Config, done: set[str], *, progress: bool, extras: list[str] | None = None) -> Path:
    """mksquashfs into a temporary file beside the image (hidden): the caller verifies it before it replaces
    anything, and removes it in any case."""
    mksquashfs = find_mksquashfs()
    image = run.root / cfg.pack.image
    fd, tmp_name = tempfile.mkstemp(prefix=f".{image.name}.", suffix=".tmp", dir=run.root)
    os.close(fd)
    tmp = Path(tmp_name)
    exclude = run.state / "pack-exclude.txt"
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
        sha, size = sha256_of(run.data / name)
        expected[name] = (size, sha)
    return expected


def verify_image(image: Path, expected: dict[str, tuple[int, str]]) -> None:
    """The image holds exactly the expected files, each of the expected size, and each reads back with the
    expected sha256. Raises UserError saying what differs."""
    listed = image_sizes(image)
    if listed.keys() != expected.keys():
        missing, extra = sorted(expected.keys() - listed.keys()), sorted(listed.keys() - expected.keys())
        raise UserError(f"it does not hold what the manifest lists: missing {missing[:3]}, unexpected {extra[:3]}")
    for name, (size, _) in expected.items():
        if listed[name] != size:
            raise UserError(f"{name} is {listed[name]} bytes in it, {size} in the manifest")
    names = sorted(expected)
    read_back = _read_back_by_cat if _can_cat() else _read_back_by_extracting
    for start in range(0, len(names), CAT_BATCH):
        batch = names[start:start + CAT_BATCH]
        for name, sha in zip(batch, read_back(image, batch, [expected[n][0] for n in batch]), strict=True):
            if sha != expected[name][1]:
                raise UserError(f"{name} reads back different from the file packed (sha256 {sha[:16]}..., the "
                                f"manifest says {expected[name][1][:16]}...)")


def _can_cat() -> bool:
    """squashfs-tools 4.5 and later can stream files out (``-cat``); older ones can only extract them."""
    out = subprocess.run([_unsquashfs(), "-help"], capture_output=True, text=True, check=False)
    return "-cat" in out.stdout + out.stderr


def _read_back_by_cat(image: Path, names: list[str], sizes: list[int]) -> list[str]:
    """The sha256 of each file as ``unsquashfs -cat`` streams them out, one after the other, in this order."""
    proc = subprocess.Popen([_unsquashfs(), "-cat", str(image), *names], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    digests = []
    with proc.stdout, proc.stderr:
        for name, size in zip(names, sizes, strict=True):
            digest, left = hashlib.sha256(), size
            while left:
                block = proc.stdout.read(min(left, HASH_CHUNK))
                if not block:
                    proc.wait()
                    raise UserError(f"{name} reads back short ({size - left} of {size} bytes): "
                                    f"{proc.stderr.read().decode(errors='replace').strip()[:200]}")
                digest.update(block)
                left -= len(block)
            digests.append(digest.hexdigest())
        trailing = proc.stdout.read(1)
        errors = proc.stderr.read().decode(errors="replace").strip()
    if proc.wait() != 0 or trailing:
        raise UserError(f"unsquashfs -cat failed ({proc.returncode}): {errors[:200] or 'more bytes than listed'}")
    return digests


def _read_back_by_extracting(image: Path, names: list[str], sizes: list[int]) -> list[str]:
    """The same from an older unsquashfs: extract this batch to a temporary folder, hash, remove it."""
    with tempfile.TemporaryDirectory(prefix="zenodo-hpc-verify-") as tmp:
        out = subprocess.run([_unsquashfs(), "-n", "-d", f"{tmp}/x", str(image), *names], capture_output=True,
                             text=True, check=False)
        if out.returncode != 0:
            raise UserError(f"unsquashfs cannot extract files: {out.stderr.strip()[:200]}")
        return [sha256_of(Path(tmp) / "x" / name)[0] for name in names]


def pack(run: RunDir, cfg: Config, *, allow_partial: bool = False, progress: bool | None = None,
         card_extra: str = "", exclude: Iterable[str] = (), figures: FigureWriter | None = None) -> PackResult:
    """Check every done record, build the image, verify every file of it, and only then put it in place.

    ``exclude``: done records left out of the image (a release leaves out versions superseded by a newer
    one; their folders stay in ``data/``). ``card_extra``: markdown the dataset card shows (the release).
    ``figures``: writes the figures the card links (the commands hand in the report's ``card_figures``;
    this module draws nothing itself).
    """
    started = time.monotonic()
    find_mksquashfs()
    done, partial = check_complete(run, allow_partial)
    left_out = set(exclude)
    files, damaged = check_done_records(run, cfg, done - left_out)
    if damaged:
        send_back(run, damaged, allow_partial=allow_partial)
        partial = True
    entries = manifest_entries(run, cfg, files, superseded=left_out)
    extras = write_extras(run, cfg, entries, card_extra, figures)
    show = sys.stderr.isatty() if progress is None else progress
    expected = expected_files(run, entries, extras)
    data_bytes = sum(size for size, _ in expected.values())
    image = run.root / cfg.pack.image
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
            f"{result.files} files, {result.data_bytes / 1e6:.1f} MB of data, ratio {result.ratio:.2f}, "
            f"{rate:.1f} MB/s; md5 {result.md5}; verified")
