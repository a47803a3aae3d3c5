"""Pack a finished run into one squashfs image, reproducibly, and verify it.

The image's root is ``<run>/data/``: the record folders plus ``manifest.jsonl`` (per record: id, doi,
files with sha256 and size, segments, source, status), a ``README.md`` dataset card, ``records.jsonl``
and ``run.yaml``. Debian's ``mksquashfs`` builds it with zstd, 1 MiB blocks, root-owned files, no
xattrs and fixed timestamps, into a temporary name that is renamed only when complete, so the same run
packed twice gives byte-identical images and a failed pack never leaves a truncated image behind.
``<image>.md5`` and ``<image>.sha256`` are written beside it, and the finished image is verified: its
listing must match the manifest, and a sample of records must read back byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import __version__
from .config import Config
from .errors import UserError
from .load import load_metadata
from .state import DONE, SHARED_FILE_MODE, RunDir, atomic_write_text, ids_in, iter_records, read_failure
from .status import gather_status
from .store import STAGING_PREFIX, record_file_names

log = logging.getLogger(__name__)

EXTRAS = ("manifest.jsonl", "README.md", "records.jsonl", "run.yaml")
BLOCK_SIZE = "1M"
VERIFY_SAMPLE = 5
HASH_CHUNK = 1 << 20


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
    status = gather_status(run)
    if status.records == 0:
        raise UserError(f"{run.root} has no harvested records to pack")
    unfinished = status.pending + status.failed
    if unfinished and not allow_partial:
        raise UserError(
            f"{run.root} is not complete: {status.done} done, {status.failed} failed, {status.pending} pending, "
            f"{status.quarantined} quarantined of {status.records}; finish it with `zenodo-hpc resume "
            f"{run.root}`, or pack what is there with --allow-partial"
        )
    return ids_in(run, DONE), bool(unfinished)


def file_digest(path: Path) -> tuple[str, str, int]:
    """md5, sha256 and size of a file, in one pass."""
    md5, sha = hashlib.md5(), hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK), b""):
            md5.update(chunk)
            sha.update(chunk)
            size += len(chunk)
    return md5.hexdigest(), sha.hexdigest(), size


def manifest_entries(run: RunDir, cfg: Config, done: set[str]) -> list[dict[str, Any]]:
    """One entry per harvested record, in manifest order: what is in the image, or why it is not."""
    entries = []
    names_for = record_file_names
    for hit in iter_records(run.records):
        record_id = str(hit["id"])
        entry: dict[str, Any] = {"id": record_id, "doi": hit.get("doi"),
                                 "title": (hit.get("metadata") or {}).get("title")}
        if record_id in done:
            folder = run.record_folder(record_id)
            files = []
            for name in names_for(record_id, cfg.output.formats):
                _, sha, size = file_digest(folder / name)
                files.append({"name": f"{record_id}/{name}", "size": size, "sha256": sha})
            meta = load_metadata(folder / f"metadata_{record_id}.json")
            source = meta.get("source") or {}
            entry.update(status="done", files=files, segments=meta.get("stats", {}).get("segments", 0),
                         source={"kind": source.get("kind"), "url": source.get("url")})
        else:
            failure = read_failure(run, record_id) or {}
            status = "quarantined" if failure.get("quarantined") else "failed" if failure else "pending"
            entry.update(status=status, reason=failure.get("reason"), files=[], segments=0)
        entries.append(entry)
    return entries


def dataset_card(run: RunDir, cfg: Config, entries: list[dict[str, Any]]) -> str:
    """README.md of the image: what the data is, counts, how it was made, how to mount and load it."""
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

## Files

- `<id>/images_<id>.h5`: all images of a record (`/segments`, `/files/path`, `/files/offset`).
- `<id>/images_<id>.pkl`: the 2018 layout, `dict[path] -> list of (80, 80) arrays`.
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
local processes), `zenodo-hpc pack` built this image with `mksquashfs -comp {cfg.pack.compression} -b 1M
-all-root -no-xattrs` and fixed timestamps: packing the same run again gives the same bytes.

```yaml
{config_text}
```
"""


def write_extras(run: RunDir, cfg: Config, entries: list[dict[str, Any]]) -> None:
    """The image root's own files, written atomically into ``<run>/data/``."""
    run.data.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.data / "manifest.jsonl",
                      "".join(json.dumps(e, ensure_ascii=False, sort_keys=True) + "\n" for e in entries))
    atomic_write_text(run.data / "README.md", dataset_card(run, cfg, entries))
    shutil.copyfile(run.records, run.data / ".records.jsonl.tmp")
    os.replace(run.data / ".records.jsonl.tmp", run.data / "records.jsonl")
    atomic_write_text(run.data / "run.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def excluded_entries(run: RunDir, done: set[str]) -> list[str]:
    """Top-level entries of ``data/`` that are not part of the image: staging leftovers, records not done."""
    out = []
    for entry in sorted(os.listdir(run.data)):
        if entry.startswith(STAGING_PREFIX) or (entry not in EXTRAS and entry not in done):
            out.append(entry)
    return out


def mksquashfs_command(mksquashfs: str, source: Path, target: Path, cfg: Config, exclude_file: Path,
                       progress: bool) -> list[str]:
    command = [mksquashfs, str(source), str(target), "-noappend", "-comp", cfg.pack.compression, "-b", BLOCK_SIZE,
               "-all-root", "-no-xattrs", "-mkfs-time", "0", "-all-time", "0", "-ef", str(exclude_file),
               "-progress" if progress else "-no-progress"]
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if cpus and cpus.isdigit():  # in a SLURM job: the CPUs it was given, not every CPU of the node
        command += ["-processors", cpus]
    return command


def build_image(run: RunDir, cfg: Config, done: set[str], *, progress: bool) -> Path:
    """mksquashfs into a temporary name beside the image, renamed when complete."""
    mksquashfs = find_mksquashfs()
    image = run.root / cfg.pack.image
    fd, tmp_name = tempfile.mkstemp(prefix=f".{image.name}.", suffix=".tmp", dir=run.root)
    os.close(fd)
    tmp = Path(tmp_name)
    exclude = run.state / "pack-exclude.txt"
    atomic_write_text(exclude, "".join(f"{e}\n" for e in excluded_entries(run, done)))
    command = mksquashfs_command(mksquashfs, run.data, tmp, cfg, exclude, progress)
    try:
        proc = subprocess.run(command, stdout=None if progress else subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, check=False)
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout or "").strip().splitlines()
            raise UserError(f"mksquashfs failed ({proc.returncode}): {detail[-1] if detail else 'no message'}")
        os.chmod(tmp, SHARED_FILE_MODE)
        os.replace(tmp, image)
    finally:
        tmp.unlink(missing_ok=True)
    return image


def write_checksums(image: Path) -> tuple[str, str]:
    md5, sha, _ = file_digest(image)
    atomic_write_text(image.with_name(image.name + ".md5"), f"{md5}  {image.name}\n")
    atomic_write_text(image.with_name(image.name + ".sha256"), f"{sha}  {image.name}\n")
    return md5, sha


def image_listing(image: Path) -> set[str]:
    """Every regular file in the image, by path (``unsquashfs -lls``, which comes with mksquashfs)."""
    unsquashfs = shutil.which("unsquashfs")
    if unsquashfs is None:
        raise UserError("unsquashfs not found: install squashfs-tools")
    out = subprocess.run([unsquashfs, "-lls", "-d", "", str(image)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise UserError(f"{image}: unsquashfs cannot list it: {out.stderr.strip()[:200]}")
    files = set()
    for line in out.stdout.splitlines():
        if line.startswith("-"):  # a regular file: "-rw-r--r-- root/root  1234 1970-01-01 00:00 path"
            files.add(line.split(None, 5)[5].lstrip("/"))
    return files


def verify_image(run: RunDir, image: Path, entries: list[dict[str, Any]], *, sample: int = VERIFY_SAMPLE) -> None:
    """The listing matches the manifest, and a sample of records reads back byte for byte."""
    expected = {f["name"] for e in entries for f in e["files"]} | set(EXTRAS)
    listed = image_listing(image)
    if listed != expected:
        missing, extra = sorted(expected - listed), sorted(listed - expected)
        raise UserError(f"{image} does not match its manifest: missing {missing[:3]}, unexpected {extra[:3]}")
    done = [e for e in entries if e["status"] == "done"]
    chosen = random.Random(0).sample(done, min(sample, len(done)))
    with tempfile.TemporaryDirectory(prefix="zenodo-hpc-verify-") as tmp:
        wanted = [f["name"] for e in chosen for f in e["files"]]
        if wanted:
            out = subprocess.run(["unsquashfs", "-n", "-d", f"{tmp}/x", str(image), *wanted], capture_output=True,
                                 text=True, check=False)
            if out.returncode != 0:
                raise UserError(f"{image}: cannot read records back: {out.stderr.strip()[:200]}")
        for entry in chosen:
            for f in entry["files"]:
                _, sha, _ = file_digest(Path(tmp) / "x" / f["name"])
                if sha != f["sha256"]:
                    raise UserError(f"{image}: {f['name']} reads back different from {run.data / f['name']}")


def pack(run: RunDir, cfg: Config, *, allow_partial: bool = False, progress: bool | None = None) -> PackResult:
    """Build, checksum and verify ``<run>/<pack.image>``."""
    started = time.monotonic()
    find_mksquashfs()
    done, partial = check_complete(run, allow_partial)
    entries = manifest_entries(run, cfg, done)
    write_extras(run, cfg, entries)
    show = sys.stderr.isatty() if progress is None else progress
    data_bytes = sum(f["size"] for e in entries for f in e["files"])
    data_bytes += sum((run.data / name).stat().st_size for name in EXTRAS)
    log.info("packing %d records (%d bytes) into %s", len(done), data_bytes, run.root / cfg.pack.image)
    image = build_image(run, cfg, done, progress=show)
    md5, sha = write_checksums(image)
    verify_image(run, image, entries)
    files = sum(len(e["files"]) for e in entries) + len(EXTRAS)
    return PackResult(image, len([e for e in entries if e["status"] == "done"]), files, data_bytes,
                      image.stat().st_size, md5, sha, time.monotonic() - started, partial)


def format_summary(result: PackResult) -> str:
    rate = result.data_bytes / 1e6 / result.seconds if result.seconds else 0.0
    part = " (partial: --allow-partial)" if result.partial else ""
    return (f"pack: {result.image} ({result.image_bytes / 1e6:.1f} MB) holds {result.records} records{part}, "
            f"{result.files} files, {result.data_bytes / 1e6:.1f} MB of data, ratio {result.ratio:.2f}, "
            f"{rate:.1f} MB/s; md5 {result.md5}; verified")


def pack_task(run_dir: str) -> str:
    """The SLURM pack job's call (through submitit): pack the run, or fail saying why."""
    from .state import load_run

    run, cfg = load_run(run_dir)
    summary = format_summary(pack(run, cfg, progress=False))
    log.info(summary)
    return summary
