"""The chain of rounds of a run (``<run>/state/chain.json``): which round, what is queued next, how it ended.

Written by ``submit``/``resume``/``run`` when they queue a round on SLURM and by each finishing job
(zenodo_hpc/drivers/finish.py); read by ``status`` and by ``run`` while it follows the chain.

A round that Zenodo's request budget stopped (a worker refused a wait longer than ``zenodo.max_wait_s``:
``rate_limited``) is not the records' fault: :func:`budget_returns` tells when the budget comes back, from
the ``retry_at`` its workers wrote in the failure markers, and the next round starts then without counting.
"""

from __future__ import annotations

import calendar
import logging
import math
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ..core.errors import UserError
from ..core.state import DONE, FAILED, RunDir, atomic_write_json, ids_in, read_failure, read_json

log = logging.getLogger(__name__)

RATE_LIMITED = "rate_limited"  # the reason of a record refused by Zenodo's budget: never its fault
UTC_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_TASK = re.compile(r"g(\d+)-s\d+")  # a worker's task name, ``g0002-s00017 (job ...)``


@dataclass
class Chain:
    """The rounds one ``submit``/``resume`` started, and what is queued next."""

    started_by: str  # "submit", "resume", "run"
    rounds: int = 0  # rounds (generations) queued by this chain
    max_rounds: int = 3
    generations: list[int] = field(default_factory=list)
    finishing_job: str | None = None  # SLURM: the job that decides after the current round (or the pack job)
    pack_job: str | None = None  # SLURM: the pack job the last finishing job queued, with the pack's resources
    state: str = "running"  # running, packed, stopped
    message: str = ""  # the last decision, in words
    resumes_at: str | None = None  # UTC: the next round waits for Zenodo's request budget until then
    budget_rounds: int = 0  # rounds queued again after Zenodo's budget stopped one (not counted in ``rounds``)
    done_when_queued: int | None = None  # records done when the current round was queued

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Chain:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def load_chain(run: RunDir) -> Chain | None:
    """The run's current chain, or None (never submitted on SLURM, or an unreadable file: logged)."""
    try:
        data = read_json(run.chain)
    except UserError as exc:
        log.warning("%s; a new chain starts with the next submit or resume", exc)
        return None
    return Chain.from_json(data) if isinstance(data, dict) else None


def save_chain(run: RunDir, chain: Chain) -> None:
    atomic_write_json(run.chain, chain.to_json())


def utc_text(epoch: float) -> str:
    """``2026-12-07T14:05:12Z``: a time as markers and chain.json keep it (rounded up: never before it)."""
    return time.strftime(UTC_FORMAT, time.gmtime(math.ceil(epoch)))


def utc_epoch(text: object) -> float | None:
    """The epoch time of :func:`utc_text`'s form; None for anything else."""
    try:
        return float(calendar.timegm(time.strptime(str(text), UTC_FORMAT)))
    except (TypeError, ValueError, OverflowError):
        return None


def task_generation(task: object) -> int | None:
    """The plan a worker's task name belongs to (``g0002-s00017 ...`` -> 2); None for another name."""
    match = _TASK.match(str(task))
    return int(match.group(1)) if match else None


def budget_returns(run: RunDir, generation: int) -> float | None:
    """When Zenodo's request budget returns (epoch), if it stopped a worker of plan ``generation``; else None.

    The latest ``retry_at`` of the records that plan's workers failed as ``rate_limited`` and that are still not
    done. A server that gave no end to its wait ("for ever") leaves no ``retry_at``: that is no budget.
    """
    latest = None
    for record_id in ids_in(run, FAILED) - ids_in(run, DONE):
        failure = read_failure(run, record_id)
        if failure is None or failure.reason != RATE_LIMITED:
            continue
        when = utc_epoch(failure.retry_at)
        if when is None or task_generation(failure.failure_at(-1).get("task")) != generation:
            continue
        latest = when if latest is None else max(latest, when)
    return latest


def note_budget_gone(run: RunDir, until: float) -> None:
    """Keep (``state/budget.json``) that Zenodo's budget is gone until ``until`` (epoch), for the workers that start
    after this one: they then do not spend a request each to be refused. A later time replaces an earlier one."""
    known = budget_gone_until(run)
    if known is None or until > known:
        atomic_write_json(run.budget, {"retry_at": utc_text(until)})


def budget_gone_until(run: RunDir) -> float | None:
    """When Zenodo's budget returns, as ``state/budget.json`` keeps it (None: never refused, or unreadable)."""
    try:
        data = read_json(run.budget)
    except UserError:
        return None
    return utc_epoch(data.get("retry_at")) if isinstance(data, dict) else None
