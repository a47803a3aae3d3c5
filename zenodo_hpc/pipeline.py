"""``run``: the whole pipeline in one command — harvest, submit, wait, resume what failed, pack.

Every stage is resumable and reads the run directory, so ``run`` is safe to start again at any time: it
picks up where things stand. With SLURM it can also stop after queueing (``--no-wait``): the queued pack
job finishes the run when every task has succeeded, and a later ``run`` or ``resume`` picks up the rest.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from tqdm import tqdm

from .config import Config
from .executor import resolve_kind
from .harvest import format_summary as harvest_summary
from .harvest import harvest
from .pack import PackResult, pack
from .state import RunDir, open_run
from .status import RunStatus, gather_status
from .submit import format_result, submit_pending

log = logging.getLogger(__name__)

POLL_S = 10.0
MAX_ROUNDS = 20  # submissions in one `run` (quarantine ends every record's retries well before)


@dataclass
class RunOutcome:
    run: RunDir
    packed: PackResult | None
    status: RunStatus
    waiting: bool  # True when it returned with work still queued (--no-wait)


def say(message: str) -> None:
    print(message, flush=True)


def run_pipeline(cfg: Config, *, limit: int | None = None, wait: bool = True, kind: str | None = None,
                 poll_s: float = POLL_S, progress: bool | None = None) -> RunOutcome:
    """Harvest, then submit and wait round after round until nothing is left to submit, then pack."""
    kind = resolve_kind(kind or cfg.executor.kind)
    run = open_run(cfg)
    say(harvest_summary(harvest(cfg, limit=limit, progress=progress)))
    for _ in range(MAX_ROUNDS):
        result = submit_pending(run, cfg, kind=kind, what="run", pack_job=not wait)
        say(format_result(result, run))
        if result.plan is None:
            if result.snapshot.active:  # another driver's tasks are still out there
                wait_for_tasks(run, poll_s, progress)
                continue
            break
        if result.submission is not None and result.submission.kind == "slurm":
            if not wait:
                return RunOutcome(run, None, gather_status(run), waiting=True)
            wait_for_tasks(run, poll_s, progress)
    status = gather_status(run)
    packed = pack(run, cfg, progress=progress)
    return RunOutcome(run, packed, status, waiting=False)


def wait_for_tasks(run: RunDir, poll_s: float, progress: bool | None) -> None:
    """Poll the run until SLURM has none of its tasks queued or running, showing progress."""
    from .executor import load_submissions
    from .slurm import unfinished_tasks

    status = gather_status(run)
    bar = tqdm(total=status.records, initial=status.done + status.quarantined, unit="rec", desc="records",
               disable=None if progress is None else not progress, leave=False)
    quiet = bar.disable
    last_log = 0.0
    try:
        while True:
            active = unfinished_tasks(load_submissions(run))
            status = gather_status(run)
            finished = status.done + status.quarantined
            bar.n = finished
            eta = f"{status.eta_seconds / 60:.0f} min left" if status.eta_seconds else "time left unknown"
            bar.set_postfix_str(f"{status.failed} failed, {active} tasks active, {eta}", refresh=True)
            if quiet and time.monotonic() - last_log > 60:
                log.info("run %s: %d of %d records done, %d failed, %d tasks active, %s", run.root, status.done,
                         status.records, status.failed, active, eta)
                last_log = time.monotonic()
            if active == 0:
                return
            time.sleep(poll_s)
    finally:
        bar.close()


def interrupted_message(cfg: Config, config_path: str | None) -> str:
    again = f"zenodo-hpc run -c {config_path}" if config_path else "zenodo-hpc run -c CONFIG"
    return (f"interrupted: nothing is lost; queued SLURM jobs keep running. Continue with `{again}`, "
            f"or follow with `zenodo-hpc status {cfg.run_dir}` and `zenodo-hpc resume {cfg.run_dir}`")


def main_summary(outcome: RunOutcome) -> str:
    from .pack import format_summary

    if outcome.waiting:
        return (f"run {outcome.run.root}: jobs queued; the pack job builds the image when they all succeed. "
                f"Check with `zenodo-hpc status {outcome.run.root}`; run the same command again to pick up.")
    assert outcome.packed is not None
    return format_summary(outcome.packed)
