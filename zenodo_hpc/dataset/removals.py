"""Records that leave the dataset: withdrawn from Zenodo (deleted, or no longer open), or excluded by a list.

**Withdrawn.** Each ``update`` asks Zenodo about the previous release's records
(:func:`zenodo_hpc.zenodo.withdrawn.look_up`); a record it no longer shares is *withdrawn*: its failure marker says
``withdrawn`` with the reason (quarantined: no round tries it again), its done marker goes, and its folder
``data/<id>/`` is removed unless ``dataset.keep_withdrawn`` (or ``update --keep-withdrawn``) keeps it.

**Excluded.** ``dataset.exclude`` names a text file of record ids, DOIs and concept DOIs (one per line, ``#``
starts a comment): an author who asks to be left out. Their records stay in the run directory but leave every
release, image, manifest and export. A concept DOI leaves out every version.

:func:`left_out` is what every release, image and export leaves out; the reason of each.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.config import Config
from ..core.errors import UserError
from ..core.state import DONE, FAILED, RunDir, ids_in, iter_records, mark_failed, marker, read_failure

log = logging.getLogger(__name__)

WITHDRAWN = "withdrawn"  # the failure reason of a record Zenodo no longer shares
_DOI = re.compile(r"10\.\d{4,9}/\S+")
_DOI_PREFIXES = ("https://doi.org/", "http://doi.org/", "https://dx.doi.org/", "http://dx.doi.org/", "doi:")


@dataclass
class ExcludeList:
    """The records ``dataset.exclude`` names: ids and DOIs (a record's or its concept's), with their line."""

    path: str
    ids: dict[str, int] = field(default_factory=dict)
    dois: dict[str, int] = field(default_factory=dict)  # lower case

    def reason(self, hit: dict[str, Any]) -> str | None:
        """Why ``hit`` is left out (naming the file and line), or None."""
        name = Path(self.path).name  # the reason goes into public changelogs: no local path
        line = self.ids.get(str(hit.get("id")))
        if line is not None:
            return f"excluded by dataset.exclude ({name}, line {line}: its record id)"
        raw_metadata = hit.get("metadata")
        metadata = raw_metadata if isinstance(raw_metadata, dict) else {}
        for key, what in (("doi", "DOI"), ("conceptdoi", "concept DOI")):
            value = hit.get(key) or metadata.get(key)
            line = self.dois.get(str(value).lower()) if value else None
            if line is not None:
                return f"excluded by dataset.exclude ({name}, line {line}: its {what})"
        return None


def read_exclude_list(path: str | Path) -> ExcludeList:
    """Parse an exclude file; a line that is neither a record id nor a DOI is a one-line error naming file and line."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise UserError(f"dataset.exclude: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        line = text_line_of(exc)
        raise UserError(f"{path}:{line}: not UTF-8 text (dataset.exclude holds record ids, DOIs or concept "
                        "DOIs, one per line)") from None
    found = ExcludeList(str(path))
    for number, raw in enumerate(text.splitlines(), 1):
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        if entry.isdigit() and entry.isascii():
            found.ids.setdefault(str(int(entry)), number)
            continue
        doi = next((entry[len(p):] for p in _DOI_PREFIXES if entry.lower().startswith(p)), entry)
        if not _DOI.fullmatch(doi):
            raise UserError(f"{path}:{number}: {entry[:80]!r} is not a record id, a DOI or a concept DOI (one per "
                            "line; '#' starts a comment)")
        found.dois.setdefault(doi.lower(), number)
    return found


def text_line_of(exc: UnicodeDecodeError) -> int:
    """The line (from 1) of the first byte that is not UTF-8."""
    return exc.object[:exc.start].count(b"\n") + 1


def exclude_list(cfg: Config) -> ExcludeList | None:
    """The run's ``dataset.exclude`` list, or None when none is set."""
    path = cfg.dataset.exclude
    return read_exclude_list(path) if path else None


def excluded(run: RunDir, cfg: Config) -> dict[str, str]:
    """The harvested records ``dataset.exclude`` leaves out: id -> reason."""
    names = exclude_list(cfg)
    if names is None:
        return {}
    out = {}
    for hit in iter_records(run.records):
        why = names.reason(hit)
        if why:
            out[str(hit["id"])] = why
    return out


def withdrawn(run: RunDir) -> dict[str, str]:
    """The records withdrawn from Zenodo, by their markers: id -> reason."""
    out = {}
    for record_id in ids_in(run, FAILED) - ids_in(run, DONE):
        failure = read_failure(run, record_id)
        if failure and failure.reason == WITHDRAWN:
            out[record_id] = failure.message or "withdrawn from Zenodo"
    return out


def left_out(run: RunDir, cfg: Config) -> dict[str, str]:
    """Every record no release, image or export may hold: withdrawn or excluded, id -> reason."""
    return {**excluded(run, cfg), **withdrawn(run)}


def withdraw(run: RunDir, removed: dict[str, str], *, keep_outputs: bool) -> list[str]:
    """Mark each record withdrawn (quarantined with its reason: no round tries it again), take its done marker
    away, and remove its folder unless ``keep_outputs``; the folders removed. The marker is written first, so
    that a crash in between leaves a record that is withdrawn, never one that is done without its folder."""
    gone = []
    for record_id, reason in sorted(removed.items()):
        mark_failed(run, record_id, reason=WITHDRAWN, message=reason, attempt=0, task="update", quarantined=True)
        with contextlib.suppress(FileNotFoundError):
            marker(run, DONE, record_id).unlink()
        folder = run.record_folder(record_id)
        if not keep_outputs and folder.is_dir():
            _remove_folder(folder)
            gone.append(record_id)
        log.info("record %s withdrawn: %s%s", record_id, reason,
                 f"; its folder {folder} is kept" if keep_outputs and folder.is_dir() else "")
    return gone


def _remove_folder(folder: Path) -> None:
    """Renamed out of the way first (``data/.<id>.withdrawn``), so no reader ever sees half a record folder."""
    hidden = folder.with_name(f".{folder.name}.withdrawn")
    shutil.rmtree(hidden, ignore_errors=True)
    folder.rename(hidden)
    shutil.rmtree(hidden, ignore_errors=True)


def filter_lines(lines: Iterable[bytes], ids: set[str]) -> Iterable[bytes]:
    """The lines of ``records.jsonl`` whose record is not in ``ids`` (a line that is not a record stays)."""
    for line in lines:
        try:
            record_id = str(json.loads(line).get("id"))
        except (ValueError, AttributeError, UnicodeDecodeError):
            yield line
            continue
        if record_id not in ids:
            yield line
