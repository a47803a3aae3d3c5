"""``zenodo-hpc demo``: the whole pipeline offline on the built-in sample (demo/demo.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_executor

DEMO_EXECUTORS = ("local", "slurm", "debug")  # no `auto`: the demo picks slurm when a cluster answers itself


def add_demo(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Publish a few dozen records of real source code that come with the package (files of CPython 3.11.7: "
        "standard-library packages, C headers, IDLE's docs) on a loopback Zenodo double, then harvest, fetch, "
        "rasterize (local workers, or SLURM when a cluster answers), pack and verify the image, show the status "
        "and export by language. Needs no internet. Prints one line per stage, where everything is and what to "
        "try next (commands that run as printed from here); the log goes to DIR/run/logs/demo.log."
    )
    parser.add_argument("--out", default="zenodo-hpc-demo", metavar="DIR",
                        help="folder for the demo's run (default: ./zenodo-hpc-demo; run again to pick up)")
    add_executor(parser, choices=DEMO_EXECUTORS,
                 help="where the workers run (default: slurm when a cluster answers, else local)")
    parser.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo.demo import next_steps, run_demo

    result = run_demo(Path(args.out), executor=args.executor)
    print(next_steps(result))
    return 0
