"""Zenodo's request budget never costs a record its round, its attempts or its place in the release.

A loopback Zenodo (the package's ZenodoDouble, whose limits follow invenio-app's Flask-Limiter: a moving window
per limit, ``429`` with ``Retry-After``, ``X-RateLimit-*``) with both a minute and an hour window, scaled down
(``rate_window_seconds``: the "hour" is 60 windows). ``zenodo.max_wait_s`` is below the hour's reset, as a real
hour's wait is above the default 600 s, so a worker meets the refusal (``rate_limited``) the chain must wait out:
locally ``run`` waits for the reset, on SLURM the finishing job queues the next round with ``--begin``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import slurm_dev
import yaml
from doubles import ZenodoDouble, make_zip
from helpers import run_config, stdlib_records

from zenodo_hpc.cli import main
from zenodo_hpc.core.config import Config, config_from_dict
from zenodo_hpc.core.state import RunDir, attempts_of, ids_in, mark_failed, open_run, read_failure
from zenodo_hpc.drivers.finish import advance, budget_pause, quarantine_unfinished
from zenodo_hpc.orchestrate.chain import Chain, load_chain, utc_epoch, utc_text
from zenodo_hpc.orchestrate.executor import load_submissions
from zenodo_hpc.orchestrate.status import format_status, gather_status, status_json
from zenodo_hpc.orchestrate.worker import process_records
from zenodo_hpc.zenodo.harvest import harvest

NO_MKSQUASHFS = None if shutil.which("mksquashfs") else "mksquashfs not on PATH (apt-get install squashfs-tools)"


def budget_double(records: int, *, per_hour: int, window_s: float) -> ZenodoDouble:
    """A Zenodo with ``records`` records of real code, a generous minute and a small "hour" of ``60 * window_s``
    seconds; searches have their own limit, as on Zenodo, so that the harvest leaves the budget alone."""
    double = ZenodoDouble(rate_per_min=1000, rate_per_hour=per_hour, search_rate_per_min=10_000,
                          rate_window_seconds=window_s)
    for i, (top, files) in enumerate(stdlib_records(records), 1):
        double.add_record(ZenodoDouble.make_hit(100 + i, created=f"2016-03-{i:02d}", title=top),
                          {f"{top}.zip": make_zip(files)})
    return double


def budget_config(tmp_path: Path, double: ZenodoDouble, *, max_wait_s: float, **executor: Any) -> Config:
    """A run whose own pacing does not hold it back (run_config's budgets are far above the double's), so that
    the server's hour is what stops it, as when the budget is shared with another user of the same address;
    it refuses waits above ``max_wait_s``."""
    data = run_config(tmp_path, double, **executor).to_dict()
    data["zenodo"]["max_wait_s"] = max_wait_s
    return config_from_dict(data)


def throttled(double: ZenodoDouble) -> int:
    return sum(1 for r in double.requests if r.status == 429)


@pytest.fixture
def hour_of_a_minute() -> Iterator[ZenodoDouble]:
    """Four records, two requests an "hour" of 60 s: the third record meets the hour's limit."""
    with budget_double(4, per_hour=2, window_s=1.0) as double:
        yield double


def test_a_shard_stops_at_the_budget_and_leaves_the_rest_pending(tmp_path: Path,
                                                                 hour_of_a_minute: ZenodoDouble) -> None:
    cfg = budget_config(tmp_path, hour_of_a_minute, max_wait_s=5, max_attempts=1)
    run = open_run(cfg)
    harvest(cfg, progress=False)
    hits = [dict(h) for h in _records(run)]
    outcomes = process_records(hits, run, cfg, task="g0001-s00000")
    assert [o.status for o in outcomes] == ["done", "done", "failed"]  # the fourth is not even tried
    refused = outcomes[-1]
    assert refused.reason == "rate_limited"
    failure = read_failure(run, refused.record_id)
    assert failure.attempts == 0 and attempts_of(run, refused.record_id) == 0
    assert not failure.quarantined  # even with executor.max_attempts 1
    untried = hits[3]["id"]
    assert read_failure(run, str(untried)) is None and attempts_of(run, str(untried)) == 0
    assert throttled(hour_of_a_minute) == 1  # one refusal, not one per record left
    asked = requests.get(f"{hour_of_a_minute.api_url}/records/{untried}", timeout=30)  # the hour is still full
    assert asked.status_code == 429
    assert abs(utc_epoch(failure.retry_at) - int(asked.headers["X-RateLimit-Reset"])) <= 1  # its reset, in UTC


def test_a_worker_starting_after_the_refusal_asks_nothing(tmp_path: Path, hour_of_a_minute: ZenodoDouble) -> None:
    """The budget is the run's, shared by every task: a task that starts after another was refused (the next
    task of an array) is refused at its first record from what that one was told, without a request."""
    cfg = budget_config(tmp_path, hour_of_a_minute, max_wait_s=5)
    run = open_run(cfg)
    harvest(cfg, progress=False)
    hits = [dict(h) for h in _records(run)]
    first = process_records(hits[:3], run, cfg, task="g0001-s00000")
    assert first[-1].reason == "rate_limited"
    asked = len(hour_of_a_minute.requests)
    later = process_records(hits[3:], run, cfg, task="g0001-s00001")
    assert len(hour_of_a_minute.requests) == asked  # not one more request
    assert [o.reason for o in later] == ["rate_limited"]
    failure = read_failure(run, str(hits[3]["id"]))
    assert not failure.quarantined and failure.attempts == 0
    assert abs(utc_epoch(failure.retry_at) - utc_epoch(read_failure(run, first[-1].record_id).retry_at)) <= 1


def test_status_says_when_the_chain_resumes_and_the_round_is_not_counted(tmp_path: Path,
                                                                         hour_of_a_minute: ZenodoDouble) -> None:
    cfg = budget_config(tmp_path, hour_of_a_minute, max_wait_s=5, max_attempts=2)
    run = open_run(cfg)
    harvest(cfg, progress=False)
    chain = Chain(started_by="run", max_rounds=2)
    first = advance(run, cfg, kind="debug", chain=chain)  # round 1 runs in this process, until the budget stops it
    assert first.action == "submitted" and len(ids_in(run, "done")) == 2
    after = advance(run, cfg, kind="debug", chain=chain)  # the decision: wait for the budget, not a round 2 now
    assert after.action == "budget" and after.resume_at is not None and after.resume_at > time.time()
    saved = load_chain(run)
    assert saved.rounds == 1 and saved.resumes_at is not None
    assert "(in " not in saved.message  # chain.json is read later: no "in 42 s" that would be stale by then
    assert abs(utc_epoch(saved.resumes_at) - after.resume_at) <= 1
    status = gather_status(run)
    text = format_status(status)
    day, clock = saved.resumes_at.rstrip("Z").split("T")
    assert f"waiting for Zenodo's request budget: the next round starts at {day} {clock} UTC (in " in text
    data = json.loads(status_json(status))
    assert data["resumes_at"] == saved.resumes_at and 0 < data["resumes_in_s"] <= 62
    assert data["chain"]["resumes_at"] == saved.resumes_at
    assert status.quarantined == 0


def test_a_local_run_interrupted_while_it_waits_for_the_budget_promises_nothing(
        tmp_path: Path, hour_of_a_minute: ZenodoDouble, monkeypatch: pytest.MonkeyPatch) -> None:
    from zenodo_hpc.drivers import finish

    def interrupted(until: float) -> None:
        raise KeyboardInterrupt  # Ctrl-C during the wait

    monkeypatch.setattr(finish, "wait_for_budget", interrupted)
    cfg = budget_config(tmp_path, hour_of_a_minute, max_wait_s=5)
    run = open_run(cfg)
    harvest(cfg, progress=False)
    with pytest.raises(KeyboardInterrupt):
        finish.advance_rounds(run, cfg, kind="debug", chain=Chain(started_by="run", max_rounds=2))
    status = gather_status(run)
    assert status.budget_wait()["resumes_at"] is None  # no driver is left to start that round
    assert "the next round starts at" not in format_status(status)
    chain = load_chain(run)
    assert chain.state == "stopped" and "interrupted while waiting for Zenodo's request budget" in chain.message


def test_the_budget_frees_a_round_only_within_bounds_and_never_quarantines(tmp_path: Path,
                                                                           hour_of_a_minute: ZenodoDouble) -> None:
    """A round the budget stopped is free only when it finished records and the wait is a budget's (a day at
    most); a record still refused when a chain's rounds run out is quarantined as not_finished, not rate_limited."""
    cfg = budget_config(tmp_path, hour_of_a_minute, max_wait_s=5)
    run = open_run(cfg)
    harvest(cfg, progress=False)

    def refused(record_id: str, generation: int, in_s: float) -> None:
        mark_failed(run, record_id, reason="rate_limited", message="asks to wait", attempt=0, quarantined=False,
                    task=f"g{generation:04d}-s00000", retry_at=utc_text(time.time() + in_s))

    refused("101", 1, 30)
    assert budget_pause(run, Chain("run", rounds=1, generations=[1], done_when_queued=None)).free
    nothing_done = budget_pause(run, Chain("run", rounds=1, generations=[1], done_when_queued=0))
    assert nothing_done is not None and not nothing_done.free  # it finished no record: it counts
    assert budget_pause(run, Chain("run", rounds=1, generations=[2])) is None  # plan 2 was not stopped by it
    refused("102", 1, 2 * 86_400)
    assert budget_pause(run, Chain("run", rounds=1, generations=[1])) is None  # two days: a refusal, no budget
    chain = Chain("run", rounds=1, max_rounds=1, generations=[2])
    assert quarantine_unfinished(run, cfg, chain) == 4
    assert {read_failure(run, i).reason for i in ("101", "102")} == {"not_finished"}


@pytest.mark.skipif(NO_MKSQUASHFS is not None, reason=NO_MKSQUASHFS or "")
def test_a_walk_away_run_waits_for_the_budget_and_packs_every_record(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    """The issue's scenario, scaled down: several workers, an "hour" of 15 s that holds 4 requests, 8 records,
    and one round (``executor.max_attempts: 1``) that the budget cuts short. Before, the round was spent and the
    records the budget refused were quarantined (``rate_limited``) and left out of the image."""
    with budget_double(8, per_hour=4, window_s=0.25) as double:
        cfg = budget_config(tmp_path, double, max_wait_s=1, max_attempts=1, records_per_shard=2,
                            local={"workers": 3})
        config = tmp_path / "c.yaml"
        config.write_text(yaml.safe_dump(cfg.to_dict()))
        assert main(["run", "-c", str(config)]) == 0
        assert throttled(double) >= 1  # the hour's budget really ran out
    out = capsys.readouterr().out
    run = RunDir(cfg.run_dir)
    assert len(ids_in(run, "done")) == 8
    assert ids_in(run, "failed") == set()  # nothing quarantined, nothing left failed for the budget
    assert "holds 8 records" in out.strip().splitlines()[-1] and "verified" in out
    assert "Zenodo's request budget stopped the last round, which does not count" in out
    chain = load_chain(run)
    assert chain.rounds == 1 and chain.budget_rounds >= 1 and chain.state == "packed"


def _records(run: RunDir) -> list[dict[str, Any]]:
    from zenodo_hpc.core.state import iter_records

    return list(iter_records(run.records))


# --- on the dev cluster: the finishing job queues the next round after the reset (sbatch --begin) ------------

SLURM_PROBLEM = slurm_dev.cluster_problem() or NO_MKSQUASHFS


def scontrol_fields(job_id: str) -> dict[str, str]:
    """``scontrol show job``'s Key=Value fields of a job (the first task of an array)."""
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True,
                         check=True).stdout.splitlines()[0]
    return dict(part.split("=", 1) for part in out.split() if "=" in part)


@pytest.mark.slurm
@pytest.mark.skipif(SLURM_PROBLEM is not None, reason=SLURM_PROBLEM or "")
def test_the_finishing_job_queues_the_next_round_after_the_reset(tmp_path: Path) -> None:
    with budget_double(6, per_hour=3, window_s=1.0) as double:  # an "hour" of 60 s, 3 requests in it
        data = budget_config(tmp_path, double, max_wait_s=5, kind="slurm", records_per_shard=3,
                             array_parallelism=2, max_attempts=2).to_dict()
        data["executor"]["slurm"].update({"partition": "debug", "time_min": 5, "mem_gb": 0.5})
        data["pack"].update({"mem_gb": 0.5, "cpus_per_task": 1, "time_min": 10})
        data["output"]["formats"] = ["h5"]
        cfg = config_from_dict(data)
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump(cfg.to_dict()))
        harvest(cfg, progress=False)
        try:
            assert main(["submit", "-c", str(config)]) == 0
            run = RunDir(cfg.run_dir)
            chain = slurm_dev.wait_for(lambda: (c := load_chain(run)) and len(c.generations) == 2 and c, 180,
                                       "the finishing job to queue round 2")
            assert chain.rounds == 1 and chain.budget_rounds == 1  # the counter did not advance
            resumes = utc_epoch(chain.resumes_at)
            assert resumes is not None and resumes > time.time()
            array = load_submissions(run)[-1].arrays[0]["job_id"]
            job = scontrol_fields(array)
            begin = time.mktime(time.strptime(job["EligibleTime"], "%Y-%m-%dT%H:%M:%S"))
            assert job["JobState"] == "PENDING" and job["Reason"] == "BeginTime"
            assert begin == resumes  # sbatch --begin: the reset Zenodo gave, in the cluster's local time
            assert "waiting for Zenodo's request budget: the next round starts at" in format_status(gather_status(run))
            slurm_dev.wait_for(lambda: (c := load_chain(run)) and c.state != "running", 300, "the image")
            final = load_chain(run)
            assert final.state == "packed" and final.rounds == 1, final
            assert len(ids_in(run, "done")) == 6 and ids_in(run, "failed") == set()
            started = [r["Start"] for r in slurm_dev.job_runs(array)]
            assert started and all(time.mktime(time.strptime(s, "%Y-%m-%dT%H:%M:%S")) >= resumes for s in started)
        finally:
            out = subprocess.run(["squeue", "-h", "-o", "%A %o %Z"], capture_output=True, text=True,
                                 check=False).stdout
            slurm_dev.scancel(*[line.split()[0] for line in out.splitlines() if str(tmp_path) in line])
