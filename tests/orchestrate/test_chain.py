"""The chain of rounds and Zenodo's request budget (zenodo_hpc/orchestrate/chain.py): chain.json read and written,
times as markers keep them, a task's plan, and when the budget returns. The budget across a whole run, worker to
finishing job, is in tests/orchestrate/test_rate_chain.py."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from zenodo_hpc.core.state import RunDir, mark_done, mark_failed
from zenodo_hpc.orchestrate.chain import (
    Chain,
    budget_gone_until,
    budget_returns,
    load_chain,
    note_budget_gone,
    save_chain,
    task_generation,
    utc_epoch,
    utc_text,
)


@pytest.fixture
def run(tmp_path: Path) -> RunDir:
    run = RunDir(tmp_path / "run")
    for folder in (run.root, run.data, run.state, run.logs):
        folder.mkdir(parents=True, exist_ok=True)
    return run


def test_a_chain_is_saved_and_loaded_as_it_was(run: RunDir) -> None:
    assert load_chain(run) is None  # never submitted on SLURM
    chain = Chain("resume", rounds=2, max_rounds=4, generations=[3, 4], finishing_job="77", state="stopped",
                  message="no progress", resumes_at="2026-12-07T14:05:12Z", budget_rounds=1, done_when_queued=9)
    save_chain(run, chain)
    assert load_chain(run) == chain


def test_a_chain_json_of_a_later_version_loads_without_its_new_keys(run: RunDir) -> None:
    run.chain.write_text(json.dumps({"started_by": "run", "rounds": 1, "future_key": [1, 2]}))
    assert load_chain(run) == Chain("run", rounds=1)


def test_an_unreadable_chain_is_none_and_says_a_new_one_starts(run: RunDir, caplog: pytest.LogCaptureFixture) -> None:
    run.chain.write_text('{"started_by": "run", "rou')  # cut short
    with caplog.at_level(logging.WARNING, logger="zenodo_hpc.orchestrate.chain"):
        assert load_chain(run) is None
    assert f"{run.chain}: unreadable" in caplog.text and "a new chain starts with the next submit or resume" \
        in caplog.text
    run.chain.write_text("[1, 2]")  # JSON, not a chain
    assert load_chain(run) is None


def test_utc_text_rounds_up_and_reads_back() -> None:
    assert utc_text(0) == "1970-01-01T00:00:00Z"
    assert utc_text(86_400.2) == "1970-01-02T00:00:01Z"  # never before the time it stands for
    assert utc_epoch(utc_text(1_796_652_312)) == 1_796_652_312
    assert utc_epoch("2026-12-07T14:05:12Z") == 1_796_652_312


@pytest.mark.parametrize("text", [None, "", "2026-12-07 14:05:12", "2026-12-07T14:05:12+01:00", 1_796_652_312,
                                  "9999999-12-07T14:05:12Z"])
def test_utc_epoch_of_anything_else_is_none(text: object) -> None:
    assert utc_epoch(text) is None


@pytest.mark.parametrize(("task", "generation"), [("g0002-s00017 (job 55_3)", 2), ("g0001-s00000", 1),
                                                  ("g12-s3", 12), ("s00017", None), ("", None), (None, None),
                                                  ("pack", None)])
def test_a_task_name_tells_its_plan(task: object, generation: int | None) -> None:
    assert task_generation(task) == generation


def refused(run: RunDir, record_id: str, *, generation: int, retry_at: str | None,
            reason: str = "rate_limited") -> None:
    mark_failed(run, record_id, reason=reason, message="asks to wait", attempt=0, quarantined=False,
                task=f"g{generation:04d}-s00000 (job 12_0)", retry_at=retry_at)


def test_the_budget_returns_at_the_latest_retry_at_of_that_plans_refused_records(run: RunDir) -> None:
    assert budget_returns(run, 1) is None  # nothing failed
    refused(run, "101", generation=2, retry_at="2026-12-07T14:00:00Z")
    refused(run, "102", generation=2, retry_at="2026-12-07T15:00:00Z")
    refused(run, "103", generation=1, retry_at="2026-12-07T16:00:00Z")  # another plan's
    assert budget_returns(run, 2) == utc_epoch("2026-12-07T15:00:00Z")
    assert budget_returns(run, 1) == utc_epoch("2026-12-07T16:00:00Z")
    assert budget_returns(run, 3) is None


def test_only_records_still_refused_by_the_budget_with_an_end_count(run: RunDir) -> None:
    refused(run, "101", generation=2, retry_at="2026-12-07T18:00:00Z")
    mark_done(run, "101", {"attempts": 1})  # done since: its refusal is over
    refused(run, "102", generation=2, retry_at="2026-12-07T19:00:00Z", reason="http_error")  # not the budget
    refused(run, "103", generation=2, retry_at=None)  # a wait "for ever": no budget
    refused(run, "104", generation=2, retry_at="soon")
    assert budget_returns(run, 2) is None
    refused(run, "105", generation=2, retry_at="2026-12-07T14:00:00Z")
    assert budget_returns(run, 2) == utc_epoch("2026-12-07T14:00:00Z")


def test_a_later_end_of_the_budget_replaces_an_earlier_one_never_the_reverse(run: RunDir) -> None:
    assert budget_gone_until(run) is None  # never refused
    now = time.time()
    note_budget_gone(run, now + 60)
    assert budget_gone_until(run) == utc_epoch(utc_text(now + 60))
    note_budget_gone(run, now + 10)  # a worker told an earlier time: the later one stands
    assert budget_gone_until(run) == utc_epoch(utc_text(now + 60))
    note_budget_gone(run, now + 120)
    assert budget_gone_until(run) == utc_epoch(utc_text(now + 120))


def test_an_unreadable_budget_file_is_no_budget_and_is_replaced(run: RunDir) -> None:
    run.budget.write_text("{not json")
    assert budget_gone_until(run) is None
    note_budget_gone(run, 1_796_652_312)
    assert json.loads(run.budget.read_text()) == {"retry_at": "2026-12-07T14:05:12Z"}
