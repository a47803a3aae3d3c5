"""``run``: the whole pipeline in one command — harvest, submit, wait, another round for what failed, pack.

Every stage is resumable and reads the run directory, so ``run`` is safe to start again at any time: it
picks up where things stand. Rounds are decided by the same function everywhere (zenodo_hpc/drivers/finish.py):
locally ``run`` takes the decision itself between rounds; on SLURM the finishing job queued with each
round takes it, and ``run`` follows the chain until the image is there (or, with ``--no-wait``, returns at
once: the chain finishes without anybody logged in). A ``run`` that waits never ends without the image it
could make: when no job of the chain is left to decide (the finishing job or the pack job could not be
queued, was cancelled, or died), it takes the decision itself, in its own process.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from ..core.commands import program
from ..core.config import Config
from ..core.state import RunDir, open_run
from ..dataset.pack import PackResult
from ..orchestrate.chain import Chain, load_chain
from ..orchestrate.executor import resolve_kind
from ..orchestrate.status import RunStatus, gather_status
from ..orchestrate.submit import format_result
from ..zenodo.harvest import format_summary as harvest_summary
from ..zenodo.harvest import harvest
from .finish import MAX_LOCAL_DECISIONS, Step, advance, advance_rounds, feed_next_batch, submit_round

log = logging.getLogger(__name__)

POLL_S = 10.0
POLL_SHARE = 20  # a waiting run pauses at least 20 times as long as its last look took: under 5% of a core


@dataclass
class RunOutcome:
    run: RunDir
    packed: PackResult | None
    status: RunStatus
    waiting: bool  # True when it returned with work still queued (--no-wait)
    message: str = ""  # how the run ended when the image was not packed here (SLURM: the finishing job)


def say(message: str) -> None:
    print(message, flush=True)


def run_pipeline(cfg: Config, *, limit: int | None = None, wait: bool = True, kind: str | None = None,
                 poll_s: float = POLL_S, progress: bool | None = None, harvest_first: bool = True) -> RunOutcome:
    """Harvest, then rounds until every record is done or quarantined, then the image. ``harvest_first=False``:
    the caller has just harvested (the demo, which fetches in between), so neither harvest nor its line again."""
    kind = resolve_kind(kind or cfg.executor.kind)
    run = open_run(cfg)
    if harvest_first:
        say(harvest_summary(harvest(cfg, limit=limit, progress=progress)))
    if kind == "slurm":
        return _run_on_slurm(run, cfg, wait=wait, poll_s=poll_s, progress=progress)
    return _run_here(run, cfg, kind, poll_s=poll_s, progress=progress)


def _run_here(run: RunDir, cfg: Config, kind: str, *, poll_s: float, progress: bool | None) -> RunOutcome:
    """Local and debug executors: each round runs to its end, then the same decision as on SLURM."""
    chain = Chain(started_by="run", max_rounds=cfg.executor.max_attempts)
    step = advance_rounds(run, cfg, kind=kind, chain=chain, say=say,
                          wait=lambda: wait_for_tasks(run, poll_s, progress))
    return RunOutcome(run, step.packed, gather_status(run), waiting=False)


def _run_on_slurm(run: RunDir, cfg: Config, *, wait: bool, poll_s: float, progress: bool | None) -> RunOutcome:
    """Queue the first round and its finishing job; then follow the chain, or return at once."""
    result = submit_round(run, cfg, kind="slurm", what="run")
    say(format_result(result, run))
    if result.submission is None and not result.snapshot.active:  # nothing left to do but the image
        step = advance(run, cfg, kind="slurm", chain=load_chain(run))
        return RunOutcome(run, step.packed, gather_status(run), waiting=False, message=step.message)
    if not wait:
        return RunOutcome(run, None, gather_status(run), waiting=True)
    packed, message = follow_chain(run, cfg, poll_s, progress)
    return RunOutcome(run, packed, gather_status(run), waiting=False, message=message)


def follow_chain(run: RunDir, cfg: Config, poll_s: float, progress: bool | None) -> tuple[PackResult | None, str]:
    """Wait until the run's chain of rounds has made the image (its last word). When no job of the chain is left
    to decide, the decision is taken here (:func:`decide_here`): then the image, if packed here, too."""
    for _ in range(MAX_LOCAL_DECISIONS):
        while True:
            wait_for_tasks(run, poll_s, progress)
            chain = load_chain(run)
            if chain is not None and chain.state == "packed":
                return None, chain.message
            time.sleep(poll_s)  # a job still queued or running, or accounting behind the job writing its decision
            chain = load_chain(run)
            if chain is not None and chain.state == "packed":
                return None, chain.message
            if chain is None or not _job_alive(chain.finishing_job):
                break
        step = decide_here(run, cfg, chain)
        if step.action in ("packed", "released"):
            return step.packed, step.message
    raise RuntimeError(f"{MAX_LOCAL_DECISIONS} decisions without an end: a bug, please report it")


def decide_here(run: RunDir, cfg: Config, chain: Chain | None) -> Step:
    """The chain's job could not be queued, was cancelled or died before it decided: ``run``, which waits anyway,
    takes the decision itself (the next round, or the image packed in this process)."""
    job = chain.finishing_job if chain else None
    why = (f"its job {job} ended {_job_end(job)} without deciding (see {run.submitit_logs})" if job and
           chain and chain.state == "running" else (chain.message if chain else "no chain of rounds was recorded"))
    say(f"the chain of rounds stopped: {why}; run takes the decision here")
    if chain is None:
        chain = Chain(started_by="run", max_rounds=cfg.executor.max_attempts)
    fed = feed_next_batch(run, cfg, chain)  # a round's next batch first: it is no new round
    if fed is not None:
        say(fed)
        return Step("submitted", fed)
    step = advance(run, cfg, kind="slurm", chain=chain, what="run")
    if step.action not in ("packed", "released"):
        say(step.message)
    return step


def _job_end(job: str) -> str:
    """How SLURM says a job ended (sacct's state: CANCELLED, OUT_OF_MEMORY, FAILED...), for the log line."""
    from ..orchestrate.accounting import task_states

    state = task_states([job]).get(job)
    return state.state if state else "out of sight of squeue and sacct"


def _job_alive(job: str | None) -> bool:
    from ..orchestrate.accounting import ACTIVE_STATES, task_states

    if not job:
        return False
    state = task_states([job]).get(job)
    return state is not None and state.state in ACTIVE_STATES


def wait_for_tasks(run: RunDir, poll_s: float, progress: bool | None) -> None:
    """Poll the run until SLURM has none of its tasks (nor its finishing job) queued or running."""
    from ..orchestrate.accounting import unfinished_tasks
    from ..orchestrate.executor import load_submissions

    bar: tqdm | None = None  # made at the first look, from its status: a big run's status takes seconds
    last_log = 0.0
    try:
        while True:
            chain = load_chain(run)
            finishing = [chain.finishing_job] if chain and chain.finishing_job and chain.state == "running" else []
            submissions = load_submissions(run)
            active = unfinished_tasks(submissions, finishing) + live_local_tasks(submissions)
            looked = time.monotonic()
            status = gather_status(run)
            took = time.monotonic() - looked
            finished = status.done + status.quarantined
            if bar is None:
                bar = tqdm(total=status.records, initial=finished, unit="rec", desc="records",
                           disable=None if progress is None else not progress, leave=False)
            bar.n = finished
            eta = f"{status.eta_seconds / 60:.0f} min left" if status.eta_seconds else "time left unknown"
            bar.set_postfix_str(f"{status.failed} failed, {active} tasks active, {eta}", refresh=True)
            if bar.disable and time.monotonic() - last_log > 60:
                log.info("run %s: %d of %d records done, %d failed, %d tasks active, %s", run.root, status.done,
                         status.records, status.failed, active, eta)
                last_log = time.monotonic()
            if active == 0:
                return
            time.sleep(max(poll_s, POLL_SHARE * took))  # a big run's status takes seconds: look less often
    finally:
        if bar is not None:
            bar.close()


def live_local_tasks(submissions: list[Any]) -> int:
    """Local worker processes of earlier drivers that are still alive on this host (a killed driver's)."""
    from ..core.liveness import local_task_state

    return sum(1 for sub in submissions if sub.kind != "slurm"
               for task in sub.tasks.values() if local_task_state(task) == "RUNNING")


def interrupted_message(cfg: Config, config_path: str | None, kind: str | None = None) -> str:
    """What Ctrl-C of ``run`` left and how to go on; ``kind``: the executor asked for (else the config's)."""
    cli = program()
    again = f"{cli} run -c {config_path or 'CONFIG'}"
    left = ("queued SLURM jobs keep running" if resolve_kind(kind or cfg.executor.kind) == "slurm" else
            "the local workers stopped with it, and the records they had begun are made again")
    return (f"interrupted: nothing is lost; {left}. Continue with `{again}`, "
            f"or follow with `{cli} status {cfg.run_dir}` and `{cli} resume {cfg.run_dir}`")


def main_summary(outcome: RunOutcome) -> str:
    from ..dataset.pack import format_summary

    if outcome.waiting:
        return (f"run {outcome.run.root}: jobs queued with their finishing job, which runs further rounds and packs "
                f"the image: nothing else to do. Follow with `{program()} status {outcome.run.root}`.")
    if outcome.packed is not None:
        return format_summary(outcome.packed)
    return outcome.message
