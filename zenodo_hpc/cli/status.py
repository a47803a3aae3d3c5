"""``zenodo-hpc status``: a run from its run directory alone (orchestrate/status.py)."""

from __future__ import annotations

import argparse

from .options import add_run_dir


def add_status(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Report a run from its run directory alone (no driver needs to be running): records done, failed "
        "by reason, quarantined and pending; shards done, running, pending and failed with SLURM's state "
        "(squeue for what is queued or running, sacct with every step for how the rest ended) such as "
        "OUT_OF_MEMORY or TIMEOUT; memory and time used against asked; the chain of rounds, and when it "
        "resumes while it waits for Zenodo's request budget (UTC, and in how long); the records dataset.exclude "
        "leaves out of every release; the time left."
    )
    add_run_dir(parser)
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    parser.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    from ..core.state import load_run
    from ..orchestrate.status import format_status, gather_status, status_json

    run, cfg = load_run(args.run_dir)
    status = gather_status(run, cfg)
    print(status_json(status) if args.json else format_status(status))
    return 0
