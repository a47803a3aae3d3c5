"""status at scale: what it keeps between calls (marker times, plans) is read again once it no longer holds."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from zenodo_hpc.core.state import DONE, RunDir, atomic_write_json, marker, record_ids
from zenodo_hpc.orchestrate import status
from zenodo_hpc.orchestrate.plan import Plan, Shard
from zenodo_hpc.orchestrate.status import RATE_WINDOW_S, completion_rate


def done_at(run: RunDir, record_id: str, when: float) -> None:
    """A done marker written as a worker writes it (a new file renamed into place), dated ``when``."""
    path = marker(run, DONE, record_id)
    atomic_write_json(path, {"id": record_id})
    os.utime(path, (when, when))


def test_rate_counts_markers_written_after_an_earlier_call(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    now = time.time()
    for i in range(3):
        done_at(run, f"{i}", now - RATE_WINDOW_S - 600)  # old: out of the window
    done_at(run, "10", now - 300)
    done_at(run, "11", now - 120)
    assert completion_rate(run, now) == 2 / 300 * 60
    done_at(run, "12", now - 60)  # a new record done
    assert completion_rate(run, now) == 3 / 300 * 60


def test_rate_reads_a_marker_written_again_and_an_earlier_moment(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    now = time.time()
    done_at(run, "1", now - RATE_WINDOW_S - 600)
    done_at(run, "2", now - RATE_WINDOW_S - 600)
    done_at(run, "3", now - 100)
    assert completion_rate(run, now) is None  # one recent record: no rate
    done_at(run, "1", now - 200)  # redone: a new marker, out of the old one's place
    done_at(run, "4", now - 200)
    assert completion_rate(run, now) == 3 / 200 * 60
    earlier = now - RATE_WINDOW_S - 300  # asked about a moment when "2" was recent (the others: later still)
    assert completion_rate(run, earlier) == 4 / 300 * 60


def write_plan_file(run: RunDir, shards: list[Shard]) -> None:
    path = run.plan(1)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".new")
    tmp.write_text(Plan(1, shards).to_json())
    os.replace(tmp, path)  # a new file, as plans are written


def test_a_plan_changed_since_the_last_status_is_read_again(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    write_plan_file(run, [Shard(0, ["1", "2"], [0, 10])])
    assert [s.ids for s in status._plan(run, 1).shards] == [["1", "2"]]
    assert status._plan(run, 1) is status._plan(run, 1)  # kept while unchanged
    write_plan_file(run, [Shard(0, ["1"], [0]), Shard(1, ["3"], [20])])
    assert [s.ids for s in status._plan(run, 1).shards] == [["1"], ["3"]]


class SlowClock:
    """time for drivers.pipeline: each status takes ``status_s`` (of this clock), each pause is recorded."""

    def __init__(self, status_s: float) -> None:
        self.now, self.status_s, self.pauses = 0.0, status_s, []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


def test_a_waiting_run_looks_less_often_when_status_takes_long(tmp_path: Path, monkeypatch) -> None:
    from types import SimpleNamespace

    from zenodo_hpc.drivers import pipeline
    from zenodo_hpc.orchestrate import accounting, executor

    for status_s, expected in ((0.01, [10.0, 10.0]), (2.0, [40.0, 40.0])):  # a small run; 300,000 records
        clock = SlowClock(status_s)
        looks = iter([3, 2, 0])  # tasks still queued or running, at each look

        def slow_status(run: RunDir, clock: SlowClock = clock) -> SimpleNamespace:
            clock.now += clock.status_s
            return SimpleNamespace(records=10, done=1, quarantined=0, failed=0, eta_seconds=None)

        monkeypatch.setattr(pipeline, "time", clock)
        monkeypatch.setattr(pipeline, "gather_status", slow_status)
        monkeypatch.setattr(pipeline, "load_chain", lambda run: None)
        monkeypatch.setattr(executor, "load_submissions", lambda run: [])
        monkeypatch.setattr(accounting, "unfinished_tasks", lambda subs, finishing, looks=looks: next(looks))
        pipeline.wait_for_tasks(RunDir(tmp_path), 10.0, progress=False)
        assert clock.pauses == expected


def test_the_records_kept_in_memory_are_read_again_once_records_jsonl_changed(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_text('{"id": 1, "metadata": {}}\n{"id": 2, "metadata": {}}\n')
    assert record_ids(path) == {"1", "2"}
    with open(path, "a") as handle:  # the harvest appends
        handle.write('{"id": 3, "metadata": {}}\n')
    assert record_ids(path) == {"1", "2", "3"}
    new = tmp_path / "new"
    new.write_text('{"id": 1, "metadata": {}}\n{"id": 4, "metadata": {}}\n{"id": 3, "metadata": {}}\n')
    os.replace(new, path)  # the same size, another file (sed -i of a line): read again
    assert record_ids(path) == {"1", "3", "4"}
    ids = record_ids(path)
    ids.add("5")  # a caller's set is its own
    assert record_ids(path) == {"1", "3", "4"}


class DirectoryOpens:
    """How many times a folder is opened (listed), as the kernel tells it (Linux inotify: IN_OPEN on the folder
    itself, alternating with IN_CLOSE_NOWRITE so that two listings are two events). Nothing is faked: the code
    under test lists the real folder."""

    IN_CLOSE_NOWRITE, IN_OPEN, IN_ISDIR, IN_NONBLOCK = 0x10, 0x20, 0x40000000, 0o4000

    def __init__(self, folder: Path) -> None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(self.IN_NONBLOCK) if hasattr(libc, "inotify_init1") else -1
        if self.fd < 0 or libc.inotify_add_watch(self.fd, str(folder).encode(),
                                                 self.IN_OPEN | self.IN_CLOSE_NOWRITE) < 0:
            pytest.skip("inotify is not available here (Linux only): the listings of a folder cannot be counted")

    def count(self) -> int:
        import struct

        try:
            data = os.read(self.fd, 1 << 20)
        except BlockingIOError:
            return 0
        finally:
            os.close(self.fd)
        opens, offset = 0, 0
        while offset < len(data):
            _, mask, _, length = struct.unpack_from("iIII", data, offset)
            opens += mask == self.IN_OPEN | self.IN_ISDIR  # the folder's own (a marker file's has its name)
            offset += 16 + length
        return opens


def test_status_lists_the_done_markers_once_for_the_count_and_the_rate(tmp_path: Path) -> None:
    """state/done holds a marker per record done (300,000 in a full run, on a cluster's scratch): one listing
    serves both the count of done records and the recent completion rate."""
    run = RunDir(tmp_path)
    run.records.write_text("".join(f'{{"id": {i}, "metadata": {{}}}}\n' for i in range(1, 6)))
    now = time.time()
    for i in (1, 2, 3):
        done_at(run, str(i), now - 60 * i)
    opens = DirectoryOpens(run.markers(DONE))
    result = status.gather_status(run)
    assert opens.count() == 1
    assert (result.done, result.pending) == (3, 2)
    assert result.rate_per_min is not None and result.rate_per_min > 0
