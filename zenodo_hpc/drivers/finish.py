"""After a round of tasks: another round for what can still succeed, or the image. Submit and walk away.

A run advances in **rounds**. A round is one generation of shards (a plan) run as job arrays. When its
tasks have all ended, however they ended, one decision is taken by :func:`advance`:

- records that can still succeed (failed for a reason a retry may change, or never reached because
  their task died: out of memory, time limit, node failure, preemption, cancelled) go into a new round,
  with more memory or time after OUT_OF_MEMORY / TIMEOUT (``submit.escalate``);
- once every record is done or quarantined, the image is packed and verified;
- after ``executor.max_attempts`` rounds of one chain, what is still not done is quarantined with its
  last reason, and the image is packed from the rest.

On SLURM the decision is taken by the **finishing job** queued with every round's arrays
(``afterany`` on all of them, so it starts whatever their outcome). It asks little (it only decides): it
either queues the next round with a new finishing job, or, once there is something to pack, the **pack
job** with the pack's resources (``pack.mem_gb``, ``cpus_per_task``, ``time_min``), which packs (or makes
the release). So ``submit`` (or ``resume``, or ``run --no-wait``) and logging out ends in a verified image
with no further command. Locally, ``run`` takes the same decision between rounds; on SLURM it takes it
itself when the finishing job or the pack job could not be queued or ended without deciding. The chain's
progress is kept in ``<run>/state/chain.json`` for ``status``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..core.config import Config
from ..core.errors import UserError
from ..core.markers import FailureMarker
from ..core.state import DONE, RunDir, ids_in, load_run, mark_failed, read_failure
from ..dataset.pack import PackResult, format_summary, pack
from ..orchestrate.chain import RATE_LIMITED, Chain, budget_returns, load_chain, save_chain, utc_text
from ..orchestrate.status import resumes_text, utc_clock
from ..orchestrate.submit import SubmitResult, format_result, queue_next_batch, submit_pending, take_snapshot

log = logging.getLogger(__name__)

MAX_LOCAL_DECISIONS = 20  # a local chain ends after max_attempts rounds; this only guards against a bug
NOT_FINISHED = "not_finished"  # the reason of a record still not done when a chain's rounds are used up
BUDGET_WAIT_CAP_S = 86_400.0  # Zenodo's longest window is an hour: a longer "come back later" is no budget


# --- starting a chain: submit, resume, run --------------------------------------------------------------


def submit_round(run: RunDir, cfg: Config, *, kind: str | None = None, dry_run: bool = False,
                 what: str = "submit", stated_records: int | None = None) -> SubmitResult:
    """``submit``/``resume``: plan what is not complete, queue it, and on SLURM its finishing job.

    A submit or resume starts a new chain (round 1); the finishing jobs continue it. ``stated_records``: a dry
    run of that many records instead of the harvest (``submit --dry-run --records N``).
    """
    result = submit_pending(run, cfg, kind=kind, dry_run=dry_run, what=what, follow_up=finish_task,
                            stated_records=stated_records)
    if not dry_run and result.submission is not None and result.submission.kind == "slurm":
        chain = Chain(started_by=what, max_rounds=cfg.executor.max_attempts)
        _count_round(run, chain, result)
    return result


def _count_round(run: RunDir, chain: Chain, result: SubmitResult, pause: BudgetPause | None = None) -> None:
    """Record a queued round in the chain; one queued again after Zenodo's budget stopped the last is not
    counted against ``executor.max_attempts`` when the stopped round finished records (``pause.free``)."""
    assert result.submission is not None
    if pause is not None and pause.free:
        chain.budget_rounds += 1
    else:
        chain.rounds += 1
    chain.generations.append(result.submission.generation)
    chain.finishing_job, chain.pack_job = result.submission.finishing_job, None
    chain.state = "running"
    chain.message = (f"round {chain.rounds} of at most {chain.max_rounds} queued (plan "
                     f"{result.submission.generation})")
    chain.done_when_queued = len(result.snapshot.done)
    chain.resumes_at = utc_text(pause.until) if pause is not None and pause.wait_s > 0 else None
    if pause is not None:
        chain.message += pause.describe(from_now=False)
    if result.follow_up_error:
        chain.state = "stopped"
        chain.message += f"; but {result.follow_up_error}: run `zenodo-hpc resume {run.root}` when its tasks end"
    save_chain(run, chain)


# --- the decision ---------------------------------------------------------------------------------------


@dataclass
class Step:
    """What :func:`advance` did."""

    action: str  # "submitted", "waiting", "pack_queued", "packed", "released"
    message: str
    result: SubmitResult | None = None
    packed: PackResult | None = None
    resume_at: float | None = None  # "budget": when Zenodo's request budget returns (epoch)
    free: bool = False  # "submitted": a round queued again after the budget stopped one, not counted


@dataclass
class BudgetPause:
    """Zenodo's request budget stopped the round that ended: when it returns, and whether that round is free."""

    until: float  # epoch time the budget returns (the latest ``retry_at`` of the round's rate_limited records)
    free: bool  # the stopped round finished records: it does not count against executor.max_attempts

    @property
    def wait_s(self) -> float:
        return max(0.0, self.until - time.time())

    def describe(self, *, from_now: bool = True) -> str:
        """How a round queued after the pause is described in ``run``'s lines and (``from_now`` False: no "in 42
        min" that would be stale when read) in chain.json."""
        why = ("Zenodo's request budget stopped the last round, which does not count" if self.free else
               "Zenodo's request budget stopped the last round, which finished no record and so counts")
        when = resumes_text(self.until) if from_now else utc_clock(self.until)
        start = f"; it starts at {when}, when the budget returns" if self.wait_s > 0 else ""
        return f": {why}{start}"


def budget_pause(run: RunDir, chain: Chain | None) -> BudgetPause | None:
    """The pause Zenodo's budget asks of the chain after its last round (None: the budget did not stop it).

    A wait longer than :data:`BUDGET_WAIT_CAP_S` is a refusal, not a budget: the round counts as any other.
    """
    if chain is None or not chain.generations:
        return None
    until = budget_returns(run, chain.generations[-1])
    if until is None:
        return None
    if until - time.time() > BUDGET_WAIT_CAP_S:
        log.warning("Zenodo asked to wait until %s, more than a day: treated as a refusal, not a budget",
                    utc_text(until))
        return None
    free = chain.done_when_queued is None or len(ids_in(run, DONE)) > chain.done_when_queued
    return BudgetPause(until, free)


def _pause_for_budget(run: RunDir, chain: Chain, pause: BudgetPause) -> Step:
    """Local executors: say when the next round starts; the driver then waits (:func:`wait_for_budget`)."""
    chain.resumes_at = utc_text(pause.until)
    head = f"waiting for Zenodo's request budget: round {chain.rounds + (not pause.free)} of at most {chain.max_rounds}"
    chain.message = f"{head} starts at {utc_clock(pause.until)}"
    save_chain(run, chain)
    return Step("budget", f"{head} starts at {resumes_text(pause.until)}", resume_at=pause.until)


def wait_for_budget(until: float, *, sleep: Callable[[float], None] = time.sleep) -> None:
    """Sleep until Zenodo's budget returns (bounded by :data:`BUDGET_WAIT_CAP_S`; Ctrl-C stops it, nothing is
    lost), saying in the log every ten minutes how long is left."""
    while (left := until - time.time()) > 0:
        log.info("waiting for Zenodo's request budget until %s", resumes_text(until))
        sleep(min(left, 600.0))


def advance(run: RunDir, cfg: Config, *, kind: str, chain: Chain | None, what: str = "finish",
            may_pack: bool = True) -> Step:
    """After a round: queue the next one for what can still succeed, or pack. The one decision of a run.

    ``chain`` None means no round limit beyond the records' own attempts (the local ``run`` driver
    counts its rounds itself and passes a chain too). ``may_pack`` False (the small finishing job on SLURM):
    queue the pack job instead of packing here.
    """
    pause = budget_pause(run, chain)
    if pause is not None and pause.wait_s > 0 and kind != "slurm":
        assert chain is not None
        return _pause_for_budget(run, chain, pause)
    if chain is not None and chain.rounds >= chain.max_rounds and not (pause is not None and pause.free):
        quarantined = quarantine_unfinished(run, cfg, chain)
        if quarantined:
            log.warning("%d records still not done after %d rounds: quarantined", quarantined, chain.rounds)
    begin = pause.until if pause is not None and pause.wait_s > 0 else None  # SLURM: sbatch --begin
    result = submit_pending(run, cfg, kind=kind, what=what, follow_up=finish_task if kind == "slurm" else None,
                            begin=begin)
    if result.submission is not None:
        if chain is not None:
            _count_round(run, chain, result, pause)
        message = format_result(result, run) + (pause.describe() if pause is not None else "")
        return Step("submitted", message, result=result, free=pause is not None and pause.free)
    if result.snapshot.active:
        return Step("waiting", format_result(result, run), result=result)
    if not may_pack and chain is not None:
        return _queue_pack_job(run, cfg, chain, result)
    if chain is not None and chain.started_by == "update":
        return _release(run, cfg, chain, result)
    from ..report import card_figures  # here: drawing needs numpy and matplotlib, deciding does not

    try:
        packed = pack(run, cfg, progress=False, figures=card_figures)
    except UserError:
        # pack sends a record whose files are damaged back to be redone: another round, when one is left
        if chain is not None and chain.rounds >= chain.max_rounds:
            raise
        again = submit_pending(run, cfg, kind=kind, what=what, follow_up=finish_task if kind == "slurm" else None)
        if again.submission is None:
            raise
        if chain is not None:
            _count_round(run, chain, again)
        return Step("submitted", format_result(again, run), result=again)
    if chain is not None:
        chain.state, chain.finishing_job = "packed", None
        chain.message = f"packed after {chain.rounds} round(s): {format_summary(packed)}"
        save_chain(run, chain)
    return Step("packed", format_summary(packed), result=result, packed=packed)


def _queue_pack_job(run: RunDir, cfg: Config, chain: Chain, result: SubmitResult) -> Step:
    """Every record is done or quarantined: the pack job, with the pack's resources, packs (or releases).

    Queued only now, so that the finishing jobs of every round stay small; the chain follows it."""
    from ..orchestrate.slurm import SlurmExecutor, format_mem
    from ..orchestrate.submit import job_python

    slurm = SlurmExecutor(cfg, python=job_python(cfg))
    pack = slurm.pack_resources()
    job = slurm.submit_follow_up(run, pack_task, (str(run.root.resolve()),), [], name="pack", resources=pack)
    chain.finishing_job = chain.pack_job = job
    goal = "make the release" if chain.started_by == "update" else "pack the image"
    chain.message = (f"round {chain.rounds} ended with every record done or quarantined: pack job {job} queued to "
                     f"{goal} ({format_mem(pack.mem_gb)}, {pack.cpus_per_task} cpu, {pack.time_min} min)")
    save_chain(run, chain)
    return Step("pack_queued", chain.message, result=result)


def _release(run: RunDir, cfg: Config, chain: Chain, result: SubmitResult) -> Step:
    """The end of an ``update``'s chain: the next release (its image packed and verified), or none."""
    from .releasing import release_now, release_summary

    release = release_now(run, cfg)
    chain.state, chain.finishing_job = "packed", None
    chain.message = (f"released after {chain.rounds} round(s): {release_summary(run, release)}" if release
                     else f"nothing new after {chain.rounds} round(s): no release made")
    save_chain(run, chain)
    return Step("released", chain.message, result=result)


def advance_rounds(run: RunDir, cfg: Config, *, kind: str, chain: Chain, what: str = "run",
                   say: Callable[[str], None] | None = None, wait: Callable[[], None] | None = None) -> Step:
    """Local and debug executors: each round runs to its end, then the same decision as on SLURM, until the
    image (or the release) is made. ``wait`` is called while another driver's tasks are still out there."""
    decisions = 0
    while decisions < MAX_LOCAL_DECISIONS:
        step = advance(run, cfg, kind=kind, chain=chain, what=what)
        if say is not None:
            say(step.message if step.action not in ("packed", "released") or step.result is None
                else format_result(step.result, run))
        if step.action in ("packed", "released"):
            return step
        if step.action == "budget" and step.resume_at is not None:
            _wait_or_stop(run, chain, step.resume_at)
            continue  # rounds the budget stops are bounded by the records they finish, not by this guard
        if step.action == "waiting" and wait is not None:
            wait()
        decisions += 0 if step.free else 1
    raise RuntimeError(f"{MAX_LOCAL_DECISIONS} decisions without an end: a bug, please report it")


def _wait_or_stop(run: RunDir, chain: Chain, until: float) -> None:
    """The local driver waits for Zenodo's budget; interrupted (Ctrl-C, a signal), the chain says it stopped, so
    that ``status`` does not promise a round that no driver is left to start."""
    try:
        wait_for_budget(until)
    except BaseException:
        chain.state, chain.resumes_at = "stopped", None
        chain.message = (f"interrupted while waiting for Zenodo's request budget (until {utc_clock(until)}): "
                         f"continue with `zenodo-hpc run` or `zenodo-hpc resume {run.root}`")
        save_chain(run, chain)
        raise


def quarantine_unfinished(run: RunDir, cfg: Config, chain: Chain) -> int:
    """Set aside every record not done and not quarantined yet: the chain has used its rounds."""
    snapshot = take_snapshot(run, cfg)
    count = 0
    for ref in snapshot.pending():
        failure = read_failure(run, ref.id) or FailureMarker(ref.id)
        if failure.reason == RATE_LIMITED:  # never quarantined for Zenodo's budget: for the rounds it took
            failure = FailureMarker(ref.id, attempts=failure.attempts)
        mark_failed(run, ref.id, reason=failure.reason or NOT_FINISHED,
                    message=failure.message or f"not done after {chain.rounds} rounds",
                    attempt=failure.attempts or 0, task="finish", quarantined=True)
        count += 1
    return count


def finish_task(run_dir: str) -> str:
    """The SLURM finishing job's call (through submitit): decide what comes after the round that ended; the
    packing itself is the pack job's (:func:`pack_task`)."""
    return _decide_in_job(run_dir, may_pack=False)


def pack_task(run_dir: str) -> str:
    """The SLURM pack job's call: the same decision, taken again (a resume may have queued more since), and
    this job packs (or makes the release)."""
    return _decide_in_job(run_dir, may_pack=True)


def _decide_in_job(run_dir: str, *, may_pack: bool) -> str:
    """A job of the chain decides, unless a newer chain has taken over the run."""
    run, cfg = load_run(run_dir)
    chain = load_chain(run)
    me = os.environ.get("SLURM_JOB_ID")
    if chain is not None and chain.finishing_job and me and not _same_job(chain.finishing_job, me):
        message = f"superseded: the run's chain is followed by job {chain.finishing_job} now"
        log.info(message)
        return message
    if chain is None:
        chain = Chain(started_by="finish", max_rounds=cfg.executor.max_attempts)
    if not may_pack and (fed := feed_next_batch(run, cfg, chain)) is not None:
        return fed
    from ..orchestrate.accounting import job_ids, settle_accounting
    from ..orchestrate.executor import load_submissions

    settle_accounting(job_ids(load_submissions(run)))
    try:
        step = advance(run, cfg, kind="slurm", chain=chain, may_pack=may_pack)
    except UserError as exc:
        chain.state, chain.finishing_job = "stopped", None
        chain.message = f"stopped: {exc}"
        save_chain(run, chain)
        raise
    log.info("%s", step.message)
    return step.message


def feed_next_batch(run: RunDir, cfg: Config, chain: Chain) -> str | None:
    """A round larger than the room in the queue is fed in batches: while shards of it wait to be queued, the
    finishing job queues the next batch and its own successor (one job, kept free for it), and decides nothing.
    The batch belongs to the round (``chain.rounds`` unchanged: it costs no attempt). None: no shard waits."""
    try:
        sub = queue_next_batch(run, cfg, finish_task)
    except UserError as exc:
        chain.state, chain.finishing_job = "stopped", None
        chain.message = f"stopped: {exc}; run `zenodo-hpc resume {run.root}` when the queued tasks end"
        save_chain(run, chain)
        raise
    if sub is None:
        return None
    queued = sum(len(a["shards"]) for a in sub.arrays)
    chain.finishing_job, chain.state = sub.finishing_job, "running"
    rest = ", the next batch when these end" if sub.unqueued else ": the last batch"
    chain.message = (f"round {chain.rounds} of at most {chain.max_rounds} (plan {sub.generation}): {queued} of "
                     f"{queued + len(sub.unqueued)} tasks queued{rest}")
    save_chain(run, chain)
    log.info("%s", chain.message)
    return chain.message


def _same_job(recorded: str, slurm_job_id: str) -> bool:
    """submitit records a plain job id; inside the job SLURM_JOB_ID is the same number."""
    return recorded.split("_")[0] == slurm_job_id.split("_")[0]
