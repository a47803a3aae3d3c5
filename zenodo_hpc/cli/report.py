"""``zenodo-hpc report``: one self-contained HTML page of the run and its dataset (report/)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_png, add_run_dir


def add_report(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Write one HTML file (default RUN_DIR/report.html) that opens anywhere, with no network: figures of "
        "the run (records done, failed by reason, quarantined, pending; the rounds and what each planned "
        "again; time and memory per task against what was asked, from SLURM accounting when it answers; "
        "throughput; the API budget; what is left and how long) and of its dataset (files and code images per "
        "extension, images per file and per record, files skipped by reason, licenses, records by year, the "
        "largest records, sample code images per language), and records added per release when there are "
        "two or more. Works from the run directory alone, on a run in progress too. Needs matplotlib: "
        "python -m pip install 'matplotlib>=3.6' (the report extra)."
    )
    add_run_dir(parser)
    parser.add_argument("--out", metavar="FILE", help="the HTML file to write (default: RUN_DIR/report.html)")
    add_png(parser, help="how the sample code images are rendered, as organize --png (default: grey)")
    parser.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from ..report import build_report, format_summary

    result = build_report(Path(args.run_dir), Path(args.out) if args.out else None, png=args.png)
    print(format_summary(result))
    return 0
