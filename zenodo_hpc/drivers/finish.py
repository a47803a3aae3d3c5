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
from collections.abc import Callable
from dataclasses import dataclass

from ..core.config import Config
from ..core.errors import UserError
from ..core.state import RunDir, load_run, mark_failed, read_failure
from ..dataset.pack import PackResult, format_summary, pack
from ..orchestrate.chain import Chain, load_chain, save_chain
from ..orchestrate.submit import SubmitResult, format_result, submit_pending, take_snapshot

log = logging.getLogger(__name__)

MAX_LOCAL_DECISIONS = 20  # a local chain ends after max_attempts rounds; this only guards against a bug
NOT_FINISHED = "not_finished"  # the reason of a record still not done when a chain's rounds are used up


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


def _count_round(run: RunDir, chain: Chain, result: SubmitResult) -> None:
    assert result.submission is not None
    chain.rounds += 1
    chain.generations.append(result.submission.generation)
    chain.finishing_job, chain.pack_job = result.submission.finishing_job, None
    chain.state = "running"
    chain.message = (f"round {chain.rounds} of at most {chain.max_rounds} queued (plan "
                     f"{result.submission.generation})")
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


def advance(run: RunDir, cfg: Config, *, kind: str, chain: Chain | None, what: str = "finish",
            may_pack: bool = True) -> Step:
    """After a round: queue the next one for what can still succeed, or pack. The one decision of a run.

    ``chain`` None means no round limit beyond the records' own attempts (the local ``run`` driver
    counts its rounds itself and passes a chain too). ``may_pack`` False (the small finishing job on SLURM):
    queue the pack job instead of packing here.
    """
    if chain is not None and chain.rounds >= chain.max_rounds:
        quarantined = quarantine_unfinished(run, cfg, chain)
        if quarantined:
            log.warning("%d records still not done after %d rounds: quarantined", quarantined, chain.rounds)
    result = submit_pending(run, cfg, kind=kind, what=what, follow_up=finish_task if kind == "slurm" else None)
    if result.submission is not None:
        if chain is not None:
            _count_round(run, chain, result)
        return Step("submitted", format_result(result, run), result=result)
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
    for _ in range(MAX_LOCAL_DECISIONS):
        step = advance(run, cfg, kind=kind, chain=chain, what=what)
        if say is not None:
            say(step.message if step.action not in ("packed", "released") or step.result is None
                else format_result(step.result, run))
        if step.action in ("packed", "released"):
            return step
        if step.action == "waiting" and wait is not None:
            wait()
    raise RuntimeError(f"{MAX_LOCAL_DECISIONS} decisions without an end: a bug, please report it")


def quarantine_unfinished(run: RunDir, cfg: Config, chain: Chain) -> int:
    """Set aside every record not done and not quarantined yet: the chain has used its rounds."""
    snapshot = take_snapshot(run, cfg)
    count = 0
    for ref in snapshot.pending():
        failure = read_failure(run, ref.id) or {}
        mark_failed(run, ref.id, reason=failure.get("reason") or NOT_FINISHED,
                    message=failure.get("message") or f"not done after {chain.rounds} rounds",
                    attempt=int(failure.get("attempts") or 0), task="finish", quarantined=True)
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
    from ..orchestrate.executor import load_submissions
    from ..orchestrate.slurm import job_ids, settle_accounting

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


def _same_job(recorded: str, slurm_job_id: str) -> bool:
    """submitit records a plain job id; inside the job SLURM_JOB_ID is the same number."""
    return recorded.split("_")[0] == slurm_job_id.split("_")[0]
