"""The internal commands: what the package's own processes run, not listed by ``zenodo-hpc --help``.

- ``zenodo-hpc worker RUN_DIR GENERATION SHARD [--concurrent N]``: one shard in a local executor's worker
  process (orchestrate/local.py starts ``python -m zenodo_hpc.orchestrate.worker ...``, which runs this).
- ``zenodo-hpc tick -c CONFIG --every E``: the update a ``schedule`` queued, then the next one queued
  (its job runs ``python -m zenodo_hpc.drivers.schedule tick ...``, as jobs queued by earlier versions do).

They print their own messages and let a bug's traceback reach the job's log (cli/main.py runs them as they
are), as the modules' own entry points did.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_config, add_every, add_run_dir


def add_worker(parser: argparse.ArgumentParser) -> None:
    parser.description = "One shard of a plan, in a local executor's worker process (orchestrate/worker.py)."
    add_run_dir(parser)
    parser.add_argument("generation", type=int)
    parser.add_argument("shard", type=int)
    parser.add_argument("--concurrent", type=int, default=1)
    parser.set_defaults(func=cmd_worker)


def cmd_worker(args: argparse.Namespace) -> int:
    from ..orchestrate.worker import worker_process

    return worker_process(args.run_dir, args.generation, args.shard, args.concurrent)


def add_tick(parser: argparse.ArgumentParser) -> None:
    parser.description = "The update a schedule queued, then the next one queued (drivers/schedule.py)."
    add_config(parser)
    add_every(parser)
    parser.set_defaults(func=cmd_tick)


def cmd_tick(args: argparse.Namespace) -> int:
    from ..drivers.schedule import tick

    return tick(Path(args.config), args.every)
