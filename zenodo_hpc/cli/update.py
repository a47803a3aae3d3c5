"""``zenodo-hpc update`` and ``schedule``: the next release, and the same every month (drivers/update.py,
drivers/schedule.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_config, add_every, add_executor


def add_update(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "On an existing run directory (or a new one, for the first release): harvest what Zenodo gained or "
        "changed since the last release (a day of overlap, deduplicated by id), process only what is not "
        "done (the same shards, markers and SLURM arrays as submit; done records are never redone; first, "
        "every done record's files are checked against its done marker, for a scratch that purges: what is "
        "missing or damaged is made again, a folder whose marker alone is gone is taken back), then "
        "make the next release: a verified image named after it (e.g. zenodo-ml-2026.11.29.sqsh) with "
        "<run>/releases/<version>/ (manifest, checksums, CHANGELOG.md) and the Atom feed releases/feed.xml; "
        "a new version of the Kaggle dataset and of the Zenodo record, and a commit tagged with the "
        "version of the Hugging Face dataset publish.huggingface.repo (its Parquet export; token: HF_TOKEN), "
        "when publish is configured (a failed publication is tried again by the next update), and a "
        "notice to notify.webhook_url. With nothing new it says so and makes no release. On SLURM it "
        "returns once the work is queued: the finishing job makes the release. The last release's records "
        "are checked with Zenodo first: those deleted (410, 404) or no longer open leave the release, its "
        "image and its exports, named as removed in the changelog, and their folders are removed from "
        "data/ (unless --keep-withdrawn or dataset.keep_withdrawn); records named by dataset.exclude are "
        "left out too (docs/updating.md)."
    )
    add_config(parser)
    add_executor(parser)
    parser.add_argument("--keep-withdrawn", action="store_true",
                        help="keep the data/<id>/ folders of records withdrawn from Zenodo (default: "
                             "dataset.keep_withdrawn, false: they are removed); they leave the release either way")
    parser.set_defaults(func=cmd_update)


def cmd_update(args: argparse.Namespace) -> int:
    from ..core.config import load_config
    from ..drivers.update import update

    outcome = update(load_config(args.config), kind=args.executor, keep_withdrawn=args.keep_withdrawn or None)
    print(outcome.message)
    return 0


def add_schedule(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Install `zenodo-hpc update -c CONFIG` as a recurring job: in your scrontab (SLURM's cron) when the "
        "cluster has it; else as a SLURM job that starts at the next date (sbatch --begin), runs the update "
        "and queues itself again; without SLURM, print the crontab line to add. Shows what it installed. "
        "--remove takes it out again."
    )
    add_config(parser, help="YAML config of the run")
    add_every(parser, default="month", help="how often (default: month, at 03:00 on the first)")
    parser.add_argument("--remove", action="store_true", help="remove the schedule installed for CONFIG")
    parser.set_defaults(func=cmd_schedule)


def cmd_schedule(args: argparse.Namespace) -> int:
    from ..drivers.schedule import format_result, schedule

    print(format_result(schedule(Path(args.config), args.every, remove=args.remove)))
    return 0

