"""``zenodo-hpc submit``, ``resume`` and ``run``: the records' rounds on SLURM or locally.

``submit`` and ``resume`` are :mod:`zenodo_hpc.drivers.submit` (plan, queue, and on SLURM the finishing job
that queues the next rounds: ``drivers/finish.py``); ``run`` is :mod:`zenodo_hpc.drivers.pipeline` (harvest,
submit, wait and decide, pack).
"""

from __future__ import annotations

import argparse
import sys

from .options import EXIT_INTERRUPTED, add_config, add_executor, add_limit, add_run_dir, positive_int


def add_submit(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Plan the records of <run>/records.jsonl that are not complete into shards of about "
        "executor.records_per_shard records, balanced by size, and hand them to the executor: SLURM job "
        "arrays through submitit (split at the cluster's MaxArraySize), local worker processes, or in-process "
        "debug (both run to the end). On SLURM a finishing job is queued with the arrays: when they have all "
        "ended it queues another round for what can still succeed (more memory after OUT_OF_MEMORY, more "
        "time after TIMEOUT; at most executor.max_attempts rounds; a round that Zenodo's request budget "
        "stopped does not count, and the next starts when the budget returns: sbatch --begin), or, once every "
        "record is done or quarantined, queues the pack job (pack.mem_gb, cpus_per_task, time_min), which packs "
        "the verified image. Before anything is queued, each job (an array task, the finishing job, the pack "
        "job) is checked with sbatch --test-only against the partition's nodes (--dry-run shows the outcome). "
        "Submit and log out. Records the job ids in <run>/state/."
    )
    add_config(parser)
    add_executor(parser, help="where the workers run (default: executor.kind; auto = slurm when sbatch is on PATH)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan and the job scripts (the arrays queued now, and the finishing job), "
                             "with the cluster limits read or assumed (MaxArraySize, the QOS's and association's "
                             "submit limits and what you have queued under them), how the tasks reach the queue "
                             "(all now, or in batches the finishing job queues as room frees) and the Python the "
                             "jobs run; write and submit nothing. Needs no SLURM on this machine")
    parser.add_argument("--records", type=positive_int, metavar="N",
                        help="with --dry-run: preview the plan and the scripts for N records of equal size instead "
                             "of the harvest, which need not exist yet (no internet needed)")
    parser.set_defaults(func=cmd_submit)


def cmd_submit(args: argparse.Namespace) -> int:
    from ..core.config import load_config
    from ..drivers.submit import check_preview, submit
    from ..orchestrate.submit import format_result

    check_preview(args.records, dry_run=args.dry_run)  # before the config is read: a mistake of the command line
    run, result = submit(load_config(args.config), kind=args.executor, dry_run=args.dry_run, records=args.records)
    print(format_result(result, run, dry_run=args.dry_run))
    return 0


def add_resume(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Plan again the records that are neither complete, quarantined, nor still queued or running, and "
        "submit them with the run's frozen config (run.yaml), with a finishing job on SLURM (a new chain of "
        "rounds). Shards that died of OUT_OF_MEMORY get the memory they were seen to use and at least twice "
        "what they had; of TIMEOUT, twice the time (up to executor.slurm.max_mem_gb/max_time_min); a record "
        "that failed executor.max_attempts times is quarantined. A complete run submits nothing."
    )
    add_run_dir(parser)
    parser.add_argument("--dry-run", action="store_true", help="print what would be submitted; submit nothing")
    parser.set_defaults(func=cmd_resume)


def cmd_resume(args: argparse.Namespace) -> int:
    from ..core.state import load_run
    from ..drivers.submit import resume
    from ..orchestrate.submit import format_result

    run, cfg = load_run(args.run_dir)
    print(format_result(resume(run, cfg, dry_run=args.dry_run), run, dry_run=args.dry_run))
    return 0


def add_run(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "The whole pipeline in one command: harvest, submit (SLURM arrays, or local workers), wait with a "
        "live progress display, another round for what failed until every record is done or quarantined "
        "(at most executor.max_attempts rounds; when Zenodo's request budget stops a round, the next one "
        "waits for the budget and does not count), and pack the image; on SLURM the finishing jobs take those "
        "decisions and run follows them, taking them itself when no job of the chain is left to decide (one "
        "could not be queued, was cancelled or died). Safe to run again at any time: it picks up where things "
        "stand. "
        "Ctrl-C leaves the run resumable. With SLURM and --no-wait it returns once the jobs are queued."
    )
    add_config(parser)
    add_limit(parser)
    add_executor(parser)
    parser.add_argument("--no-wait", action="store_true",
                        help="SLURM: return once the arrays and their finishing job are queued; the run finishes "
                             "alone")
    parser.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from ..core.config import load_config
    from ..drivers.pipeline import interrupted_message, main_summary, run_pipeline

    cfg = load_config(args.config)
    try:
        outcome = run_pipeline(cfg, limit=args.limit, wait=not args.no_wait, kind=args.executor)
    except KeyboardInterrupt:
        print(interrupted_message(cfg, args.config, args.executor), file=sys.stderr)
        return EXIT_INTERRUPTED
    print(main_summary(outcome))
    return 0
