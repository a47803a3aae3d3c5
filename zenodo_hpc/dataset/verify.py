"""Before a release: every done record checked against its done marker, on a scratch file system that purges.

Cluster scratch deletes files nobody modified for a while (Sherlock: 90 days on ``$SCRATCH``), so a run
directory that makes a release every month loses the files of its oldest records, or their done markers,
between two releases. ``update`` calls :func:`verify_run` before it processes anything (docs/operations.md,
"Scratch purges"):

- a done record whose files are all there, each of the size and sha256 its done marker keeps (a marker of
  an older version, without checksums: the sizes add up, the h5 reads to its last image, the metadata JSON
  parses), stays done;
- a done record with a file missing, cut short or changed is done no more: its done marker is moved to
  ``state/purged/<id>.json`` with what is wrong, and it is failed as ``damaged_output`` (its attempts
  forgotten: not its fault), so that this update's rounds make it again before the release;
- a record without a done marker whose folder is whole (every file there and readable, the h5 and the
  metadata naming this record, the metadata's record the same as ``records.jsonl``'s) is re-verified: its done
  marker is written anew from its files, and it is not made again (no download);
- a record of the latest release left with neither a done marker nor a folder is sent back the same way;
- ``records.jsonl`` must still hold every record of the latest release (a purge deletes it whole when no update
  appended to it for 90 days): otherwise the update stops, saying to append the copy kept elsewhere.

What the check found is kept in ``state/verify.json`` for ``status``. The workers of ``run``, ``submit`` and
``resume`` take back a whole folder left without its marker the same way (:func:`taken_back`) before they would
download its record again. A record that cannot be made again is failed, then quarantined by the rounds, and the
release's changelog names it: a release never silently lacks one.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import h5py

from ..core.config import Config
from ..core.errors import UserError
from ..core.state import (
    DONE,
    FAILED,
    PURGED,
    RunDir,
    atomic_write_json,
    ids_in,
    iter_records,
    mark_done,
    mark_for_redo,
    marker,
    read_done,
    read_failure,
    sha256_of,
)
from ..record.store import images_h5_name, metadata_json_name, metadata_pkl_name, record_file_names
from .check_summary import SHOWN, Check, format_check
from .decode import metadata_from_pickle
from .load import load_metadata
from .pack import DAMAGED, DamagedRecord, check_reads_whole, check_record
from .release import latest_release, plan_release
from .removals import left_out

log = logging.getLogger(__name__)

THREADS = 8  # records checked at once: reading is mostly waiting for the file system (Lustre, NFS)


def verify_run(run: RunDir, cfg: Config) -> Check:
    """Check every done record, re-verify the folders left without a done marker, send back what is purged or
    damaged (see the module's doc); write and return what was found."""
    started = time.monotonic()
    check = Check(checked_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    # superseded versions, records withdrawn from Zenodo or named by dataset.exclude: no release holds them
    not_released = set(plan_release(run, cfg).excluded) | set(left_out(run, cfg)) if run.records.exists() else set()
    unmarked = _folders_without_marker(run) - not_released
    hits = _hits_of(run, unmarked)  # records.jsonl's line of each folder without a marker; and of the release's
    _require_released_records(run, hits, not_released)
    done = sorted(ids_in(run, DONE) - not_released)
    with ThreadPoolExecutor(max_workers=THREADS) as pool:  # a shared file system answers faster to several reads
        problems = pool.map(lambda record_id: _problem_of(run, cfg, record_id), done)
        check.damaged.update((i, p) for i, p in zip(done, problems, strict=True) if p is not None)
    check.checked = len(done)
    for record_id in sorted(unmarked & set(hits)):
        problem = reverify(run, cfg, record_id, hits[record_id] or {})
        if problem is None:
            check.reverified.append(record_id)
        else:
            check.damaged[record_id] = f"its done marker is gone and {problem}"
    for record_id in set(_released_without_trace(run)) - not_released:
        check.damaged[record_id] = "its done marker and its folder are gone"
    for record_id, problem in sorted(check.damaged.items()):
        send_back(run, record_id, problem)
    check.seconds = round(time.monotonic() - started, 3)
    atomic_write_json(run.verify, check.to_json())
    (log.warning if check.damaged or check.reverified else log.info)("%s", format_check(check))
    return check


def _hits_of(run: RunDir, wanted: set[str]) -> dict[str, dict[str, Any] | None]:
    """Every record id of records.jsonl, with its line (the first of its id: the harvest keeps no other) for the
    ids ``wanted``, None for the others."""
    hits: dict[str, dict[str, Any] | None] = {}
    for hit in iter_records(run.records):
        record_id = str(hit["id"])
        if record_id not in hits:
            hits[record_id] = hit if record_id in wanted else None
    return hits


def _require_released_records(run: RunDir, hits: dict[str, Any], not_released: set[str]) -> None:
    """records.jsonl must still hold every record of the latest release: a purge deletes it whole when no update
    appended to it for 90 days, and a release made without it would silently lack every record it held."""
    release = latest_release(run)
    if release is None:
        return
    lost = [i for i in release.records if i not in hits and i not in not_released]
    if lost:
        raise UserError(
            f"{run.records} no longer holds {len(lost)} record(s) of release {release.version} (e.g. "
            f"{', '.join(lost[:SHOWN])}): a purge deleted it, or it was cut; append the copy you keep of it (docs/"
            f"operations.md, \"Scratch purges\": cat <your copy>/records.jsonl >> {run.records}), then update again")


def _problem_of(run: RunDir, cfg: Config, record_id: str) -> str | None:
    """What is wrong with a done record's files (None: they are what its done marker says)."""
    try:
        check_record(run, cfg, record_id)
    except DamagedRecord as exc:
        return str(exc)
    return None


def _folders_without_marker(run: RunDir) -> set[str]:
    """Record folders in ``data/`` whose record has no done marker, leaving out those already sent back as
    damaged (a changed file that still reads whole must not be taken back) and those set aside on purpose
    (quarantined: a record withdrawn from Zenodo whose folder is kept, say)."""
    try:
        with os.scandir(run.data) as entries:
            folders = {e.name for e in entries if e.is_dir() and not e.name.startswith(".")}
    except FileNotFoundError:
        return set()
    unmarked, failed = folders - ids_in(run, DONE), ids_in(run, FAILED)
    return {i for i in unmarked if not (i in failed and _set_aside(run, i))}


def _set_aside(run: RunDir, record_id: str) -> bool:
    failure = read_failure(run, record_id)
    return failure is not None and (bool(failure.quarantined) or failure.reason == DAMAGED)


def _released_without_trace(run: RunDir) -> list[str]:
    """Records of the latest release with neither a done marker, a folder nor a failure: purged whole."""
    release = latest_release(run)
    if release is None:
        return []
    done, failed = ids_in(run, DONE), ids_in(run, FAILED)
    return [i for i in release.records if i not in done and i not in failed and not run.record_folder(i).exists()]


def taken_back(run: RunDir, cfg: Config, record_id: str, hit: dict[str, Any]) -> bool:
    """A worker about to make a record without a done marker: True when its folder is whole and holds it (its
    marker alone was purged, or its worker died between the folder and the marker), which is then done again
    without a download. Costs one look at ``data/`` for a record that has no folder."""
    folder = run.record_folder(record_id)
    if not folder.is_dir() or (marker(run, FAILED, record_id).exists() and _set_aside(run, record_id)):
        return False
    problem = reverify(run, cfg, record_id, hit)
    if problem is None:
        log.warning("record %s: its done marker was gone and its folder is whole: taken back, not made again",
                    record_id)
    return problem is None


def reverify(run: RunDir, cfg: Config, record_id: str, hit: dict[str, Any]) -> str | None:
    """A folder left without its done marker: when it is whole and holds this record (``hit``, its line of
    records.jsonl), write its done marker anew and return None; else what is wrong with it."""
    folder = run.record_folder(record_id)
    found = {}
    for name in record_file_names(record_id, cfg.output.formats):
        try:
            sha, size = sha256_of(folder / name)
        except OSError:
            return f"{name} is missing or unreadable"
        found[name] = {"size": size, "sha256": sha}
    try:
        check_reads_whole(folder, record_id, cfg, found, None)
        metadata = load_metadata(folder / metadata_json_name(record_id))
        problem = _other_record(record_id, hit, metadata, folder, cfg)
    except (DamagedRecord, UserError, OSError) as exc:  # OSError: a file h5py or the file system refuses now
        return str(exc).replace(f"{folder}/", "")
    if problem:
        return problem
    stats = metadata.get("stats")
    mark_done(run, record_id, {"repaired_by": "verify", "repaired_because": "its done marker was gone and its "
                               "files are whole", **(stats if isinstance(stats, dict) else {})})
    return None


def _other_record(record_id: str, hit: dict[str, Any], metadata: dict[str, Any], folder: Path,
                  cfg: Config) -> str | None:
    """What says the folder holds another record than ``hit``; None when the h5, the metadata JSON and pickle all
    name it and the metadata's record is records.jsonl's."""
    if metadata.get("hit") != hit:
        return f"{metadata_json_name(record_id)} holds another record than records.jsonl's {record_id}"
    try:
        pickled = metadata_from_pickle((folder / metadata_pkl_name(record_id)).read_bytes(),
                                       metadata_pkl_name(record_id))
    except OSError as exc:
        return f"{metadata_pkl_name(record_id)} cannot be read ({exc.strerror or exc})"
    if pickled.get("hit") != hit:
        return f"{metadata_pkl_name(record_id)} holds another record than records.jsonl's {record_id}"
    if "h5" in cfg.output.formats:
        with h5py.File(folder / images_h5_name(record_id), "r") as h5:
            named = h5.attrs.get("record_id")
        if named is not None and str(named) != record_id:
            return f"{images_h5_name(record_id)} names record {named}"
    return None


def send_back(run: RunDir, record_id: str, problem: str) -> None:
    """The record is done no more: its done marker (if any) is kept in ``state/purged/<id>.json`` with what is
    wrong, and it is failed as ``damaged_output`` so that the next round makes it again."""
    try:
        kept = read_done(run, record_id)
    except UserError:
        kept = None
    atomic_write_json(marker(run, PURGED, record_id), {"id": record_id, "problem": problem, "found_by": "verify",
                                                       "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                                       "done_marker": kept.to_json() if kept else None})
    mark_for_redo(run, record_id, reason=DAMAGED, message=f"the check before the release found that {problem}")
