"""Shard the records into array tasks, balanced by size, and write the plan once for every task to read.

A plan is one generation of work: ``submit`` writes generation 1, each ``resume`` the next, holding only
the records that are not complete. ``<run>/plans/<generation>.json`` lists, per shard, the records'
ids and their byte offsets in ``records.jsonl`` (append-only, so offsets never move): a task seeks to its
own records instead of parsing the whole manifest. Shards are balanced by the records' total file size,
largest first (longest-processing-time first), so one shard does not get all the big repositories.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from ..core.records import declared_size
from ..core.state import RunDir, atomic_write_text, read_json_object, record_from_line, scan_run_records

log = logging.getLogger(__name__)


@dataclass
class RecordRef:
    """Where a record is in ``records.jsonl`` and how big its files are (what balancing needs)."""

    id: str
    offset: int
    size: int


@dataclass
class Shard:
    index: int
    ids: list[str] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    size: int = 0
    mem_gb: float | None = None  # escalated resources (resume after OUT_OF_MEMORY / TIMEOUT)
    time_min: int | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"index": self.index, "ids": self.ids, "offsets": self.offsets, "size": self.size}
        if self.mem_gb is not None:
            data["mem_gb"] = self.mem_gb
        if self.time_min is not None:
            data["time_min"] = self.time_min
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Shard:
        return cls(data["index"], data["ids"], data["offsets"], data.get("size", 0), data.get("mem_gb"),
                   data.get("time_min"))


@dataclass
class Plan:
    generation: int
    shards: list[Shard]

    @property
    def records(self) -> int:
        return sum(len(s.ids) for s in self.shards)

    def to_json(self) -> str:
        return json.dumps({"generation": self.generation, "shards": [s.to_json() for s in self.shards]},
                          separators=(",", ":")) + "\n"


def record_size(hit: dict[str, Any]) -> int:
    """A record's total declared file size, whatever the shape; 0 when unknown (absurd sizes count 0)."""
    return declared_size(hit)


def scan_records(path: Path) -> Iterator[RecordRef]:
    """The run's records (``scan_run_records``: the lines status and pack count too) with their byte offsets."""
    for start, record_id, hit in scan_run_records(path):
        yield RecordRef(record_id, start, record_size(hit))


def make_shards(records: Iterable[RecordRef], records_per_shard: int) -> list[Shard]:
    """About ``records_per_shard`` records per shard, sizes balanced: largest first to the lightest shard."""
    refs = sorted(records, key=lambda r: (-r.size, r.offset))
    if not refs:
        return []
    count = math.ceil(len(refs) / records_per_shard)
    capacity = math.ceil(len(refs) / count)
    shards = [Shard(i) for i in range(count)]
    heap = [(0, 0, i) for i in range(count)]  # (total size, records, shard index)
    for ref in refs:
        size, n, i = heapq.heappop(heap)
        shard = shards[i]
        shard.ids.append(ref.id)
        shard.offsets.append(ref.offset)
        shard.size += ref.size
        if n + 1 < capacity:
            heapq.heappush(heap, (size + ref.size, n + 1, i))
    for shard in shards:  # records of a shard in manifest order: sequential reads
        order = sorted(range(len(shard.ids)), key=shard.offsets.__getitem__)
        shard.ids = [shard.ids[k] for k in order]
        shard.offsets = [shard.offsets[k] for k in order]
    return shards


_PLAN_NAME = re.compile(r"(\d+)\.json")
_NUMBERED = re.compile(r"(\d+)\b")


def generations(run: RunDir) -> list[int]:
    """The generations with a plan file (``plans/0003.json``); other names there are not plans."""
    return sorted(int(m.group(1)) for name in _names(run.plans) if (m := _PLAN_NAME.fullmatch(name)))


def next_generation(run: RunDir) -> int:
    """One more than any generation ever used, set-aside plans (``0003.json.bad``) and submissions included:
    tasks of an old generation may still be queued, and must never read another plan under its number."""
    used = [int(m.group(1)) for folder in (run.plans, run.submissions)
            for name in _names(folder) if (m := _NUMBERED.match(name))]
    return max(used, default=0) + 1


def _names(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []


def write_plan(run: RunDir, plan: Plan) -> Path:
    """Write a plan once; a generation is never rewritten (tasks may be reading it)."""
    path = run.plan(plan.generation)
    if path.exists():
        raise UserError(f"{path} already exists: plans are written once")
    atomic_write_text(path, plan.to_json())
    return path


def load_plan(run: RunDir, generation: int) -> Plan:
    """A generation's plan. A damaged one is refused naming the file and what to do: its records' shards may
    still be queued or running, and nothing else says which records they are."""
    path = run.plan(generation)
    try:
        data = read_json_object(path)
        plan = None if data is None else _plan_from_json(data, generation, path)
    except UserError as exc:
        raise UserError(f"{exc}. It lists the shards of generation {generation}, whose tasks may still be "
                        f"queued or running: restore it, or once they have ended (`zenodo-hpc status`, squeue) move "
                        f"it away (e.g. to {path.name}.bad); `zenodo-hpc resume` then plans its unfinished records "
                        "again") from None
    if plan is None:
        raise UserError(f"{run.root} has no plan {generation} ({path})")
    return plan


def _well_formed(shard: Shard) -> bool:
    return (isinstance(shard.index, int) and isinstance(shard.ids, list) and isinstance(shard.offsets, list)
            and len(shard.ids) == len(shard.offsets) and all(isinstance(o, int) for o in shard.offsets))


def _plan_from_json(data: dict[str, Any], generation: int, path: Path) -> Plan:
    """Check a plan's shape before trusting it: shards of ids and offsets of equal length."""
    try:
        shards = [Shard.from_json(s) for s in data["shards"]]
        ok = data["generation"] == generation and all(_well_formed(s) for s in shards)
    except (KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise UserError(f"{path}: unreadable (not the plan of generation {generation}: shards of ids and offsets)")
    return Plan(generation, [Shard(s.index, [str(i) for i in s.ids], s.offsets, s.size, s.mem_gb, s.time_min)
                             for s in shards])


def read_records_at(path: Path, offsets: Iterable[int]) -> Iterator[Any]:
    """The records at these byte offsets of ``records.jsonl`` (a shard's own, without reading the rest).

    A line that is not JSON any more yields None (the worker skips it) instead of stopping the shard.
    """
    with open(path, "rb") as handle:
        for offset in offsets:
            handle.seek(offset)
            line = handle.readline()
            try:
                yield record_from_line(line)
            except ValueError:
                log.warning("%s: the record at byte %d is not JSON any more: skipped", path, offset)
                yield None
