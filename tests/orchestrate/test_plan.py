"""Planning: shards of about records_per_shard, balanced by size, written once, read back by offset."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from zenodo_hpc.core.errors import UserError
from zenodo_hpc.core.state import RunDir, append_records
from zenodo_hpc.orchestrate.plan import (
    Plan,
    RecordRef,
    load_plan,
    make_shards,
    read_records_at,
    record_size,
    scan_records,
    write_plan,
)


def refs(sizes: list[int]) -> list[RecordRef]:
    return [RecordRef(str(i), i * 100, size) for i, size in enumerate(sizes)]


def test_every_record_lands_in_exactly_one_shard_of_about_the_right_size() -> None:
    rng = random.Random(3)
    records = refs([rng.randint(0, 10**7) for _ in range(1003)])
    shards = make_shards(records, 50)
    assert len(shards) == 21
    ids = [i for s in shards for i in s.ids]
    assert sorted(ids, key=int) == [r.id for r in records]
    assert {len(s.ids) for s in shards} <= {47, 48}  # ceil(1003 / 21) = 48
    assert [s.index for s in shards] == list(range(21))


def test_sizes_are_balanced_largest_first() -> None:
    rng = random.Random(5)
    sizes = [int(rng.lognormvariate(10, 1)) for _ in range(500)]
    shards = make_shards(refs(sizes), 25)
    totals = [s.size for s in shards]
    assert sum(totals) == sum(sizes)
    naive = [sum(sizes[i:i + 25]) for i in range(0, 500, 25)]  # manifest order, no balancing
    assert max(totals) - min(totals) < (max(naive) - min(naive)) / 2
    assert max(totals) <= max(sum(sizes) / len(shards) * 1.1, max(sizes))
    heavy = [10**9] + [1000] * 99  # one huge record: its shard is filled with the smallest ones
    big = max(make_shards(refs(heavy), 10), key=lambda s: s.size)
    assert big.size == 10**9 + 9 * 1000


def test_records_of_a_shard_are_in_manifest_order() -> None:
    shards = make_shards(refs([5, 1, 9, 3, 7, 2]), 3)
    for shard in shards:
        assert shard.offsets == sorted(shard.offsets)


def test_empty_and_tiny_inputs() -> None:
    assert make_shards([], 50) == []
    (only,) = make_shards(refs([1, 2]), 50)
    assert only.ids == ["0", "1"]


def test_record_size_reads_new_and_old_shapes() -> None:
    assert record_size({"files": [{"key": "a", "size": 10}, {"filename": "b", "filesize": 5}, {"key": "x"},
                                  "junk"]}) == 15
    assert record_size({"files": {"enabled": True, "entries": {"a.zip": {"key": "a.zip", "size": 7}}}}) == 7
    # absurd sizes count nothing rather than stop every later plan (int(inf) raises OverflowError)
    absurd = [{"key": "a", "size": float("inf")}, {"key": "b", "size": float("nan")}, {"key": "c", "size": -4},
              {"key": "d", "size": 10**40}, {"key": "e", "size": 3}]
    assert record_size({"files": absurd}) == 3
    assert record_size({}) == 0


def test_scan_and_read_back_by_offset(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    hits = [{"id": 10 + i, "files": [{"size": i}], "metadata": {"title": "é" * i}} for i in range(7)]
    append_records(run.records, hits)
    with open(run.records, "a") as handle:
        handle.write('{"id": 99, "trunc')  # an interrupted append is not a record
    scanned = list(scan_records(run.records))
    assert [r.id for r in scanned] == [str(h["id"]) for h in hits]
    picked = [scanned[5].offset, scanned[1].offset]
    assert [h["id"] for h in read_records_at(run.records, picked)] == [15, 11]


def test_plans_are_written_once(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    plan = Plan(1, make_shards(refs([3, 1, 2]), 2))
    path = write_plan(run, plan)
    assert json.loads(path.read_text())["generation"] == 1
    again = load_plan(run, 1)
    assert [s.ids for s in again.shards] == [s.ids for s in plan.shards]
    with pytest.raises(UserError, match="written once"):
        write_plan(run, plan)
    with pytest.raises(UserError, match="has no plan 2"):
        load_plan(run, 2)
