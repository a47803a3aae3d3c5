"""The ``zenodo-hpc`` command line: a thin layer over the pipeline's functions.

Every command prints one clear line and exits non-zero on bad input (``--debug`` shows the traceback).
Each command imports what it needs when it runs: ``--help``, ``--version`` and ``status`` load neither
numpy, h5py, requests nor submitit (tests/test_cli.py checks it).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .core.errors import UserError

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def cmd_process(args: argparse.Namespace) -> int:
    from .core.config import load_config
    from .record.process import format_summary, process_path

    cfg = load_config(args.config)
    result = process_path(Path(args.source), Path(args.out), cfg, record_id=args.id)
    print(format_summary(result))
    return 0


def cmd_harvest(args: argparse.Namespace) -> int:
    from .core.config import load_config
    from .zenodo.harvest import format_summary, harvest, parse_since

    cfg = load_config(args.config)
    if args.api_url:
        cfg.zenodo.api_url = args.api_url
    since = parse_since(args.since) if args.since else None
    result = harvest(cfg, limit=args.limit, since=since)
    print(format_summary(result))
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from .core.state import load_run
    from .zenodo.fetch import fetch_all, format_fetch_summary

    run, cfg = load_run(args.run_dir)
    result = fetch_all(run, cfg)
    print(format_fetch_summary(result, run))
    everything_failed = bool(result.failed) and not (result.cached or result.already)
    return EXIT_ERROR if everything_failed else 0


def cmd_submit(args: argparse.Namespace) -> int:
    from .core.config import load_config
    from .core.state import RunDir, check_config, open_run
    from .drivers.finish import submit_round
    from .orchestrate.submit import format_result

    if args.records is not None and not args.dry_run:
        raise UserError("--records N is for a preview only: use it with --dry-run")
    cfg = load_config(args.config)
    if args.dry_run:
        run = RunDir(cfg.run_dir)
        check_config(run, cfg)
    else:
        run = open_run(cfg)
    result = submit_round(run, cfg, kind=args.executor, dry_run=args.dry_run, what="submit",
                          stated_records=args.records)
    print(format_result(result, run, dry_run=args.dry_run))
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from .core.state import load_run
    from .drivers.finish import submit_round
    from .orchestrate.submit import format_result

    run, cfg = load_run(args.run_dir)
    result = submit_round(run, cfg, dry_run=args.dry_run, what="resume")
    print(format_result(result, run, dry_run=args.dry_run))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .core.state import load_run
    from .orchestrate.status import format_status, gather_status, status_json

    run, cfg = load_run(args.run_dir)
    status = gather_status(run, cfg)
    print(status_json(status) if args.json else format_status(status))
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    from .core.state import load_run
    from .dataset.pack import format_summary, pack
    from .report import card_figures

    run, cfg = load_run(args.run_dir)
    print(format_summary(pack(run, cfg, allow_partial=args.allow_partial, figures=card_figures)))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .core.config import load_config
    from .drivers.pipeline import interrupted_message, main_summary, run_pipeline

    cfg = load_config(args.config)
    try:
        outcome = run_pipeline(cfg, limit=args.limit, wait=not args.no_wait, kind=args.executor)
    except KeyboardInterrupt:
        print(interrupted_message(cfg, args.config, args.executor), file=sys.stderr)
        return EXIT_INTERRUPTED
    print(main_summary(outcome))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo.demo import next_steps, run_demo

    result = run_demo(Path(args.out), executor=args.executor)
    print(next_steps(result))
    return 0


def cmd_organize(args: argparse.Namespace) -> int:
    from .dataset.organize import DEFAULT_EXTENSIONS, format_summary, organize

    result = organize(Path(args.source), Path(args.out), extensions=args.extensions or DEFAULT_EXTENSIONS,
                      png=args.png, workers=args.workers)
    print(format_summary(result))
    return 0


def cmd_publish_kaggle(args: argparse.Namespace) -> int:
    from .dataset.publish import format_summary, publish_kaggle

    keywords = args.keywords.split(",") if args.keywords is not None else None
    result = publish_kaggle(Path(args.folder), username=args.username, title=args.title, name=args.name,
                            keywords=keywords, license=args.license, public=args.public,
                            version_notes=args.version_notes)
    print(format_summary(result))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report, format_summary

    result = build_report(Path(args.run_dir), Path(args.out) if args.out else None, png=args.png)
    print(format_summary(result))
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    from .core.config import load_config
    from .drivers.update import update

    outcome = update(load_config(args.config), kind=args.executor, keep_withdrawn=args.keep_withdrawn or None)
    print(outcome.message)
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    from .drivers.schedule import format_result, schedule

    print(format_result(schedule(Path(args.config), args.every, remove=args.remove)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .dataset.organize import DEFAULT_EXTENSIONS  # light: organize imports numpy, h5py and tqdm where they are used

    parser = argparse.ArgumentParser(
        prog="zenodo-hpc",
        description="Build the Zenodo-ML dataset (code images of Zenodo software records) on SLURM clusters.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    process = commands.add_parser(
        "process",
        help="one archive or folder -> one record folder, no cluster",
        description=(
            "Extract an archive (.zip, .tar, .tar.gz/.tgz, .tar.bz2, .tar.xz) or walk a folder, rasterize its "
            "text files into 80x80 code images and write the record folder OUT/ID/: images_ID.h5, metadata_ID.pkl "
            "and metadata_ID.json, and images_ID.pkl (the 2018 layout) when output.formats lists pkl. Prints a "
            "one-line summary."
        ),
    )
    process.add_argument("source", metavar="ARCHIVE_OR_DIR", help="the archive or folder to process")
    process.add_argument("--out", required=True, metavar="DIR",
                         help="folder that receives the record folder DIR/ID/ (created if missing)")
    process.add_argument("--id", metavar="ID",
                         help="record id (default: the archive's name without its suffixes)")
    process.add_argument("-c", "--config", metavar="CONFIG",
                         help="YAML config for the raster:, extract: and output: settings (default: built-in)")
    process.set_defaults(func=cmd_process)

    harvest = commands.add_parser(
        "harvest",
        help="list Zenodo's software records into <run>/records.jsonl",
        description=(
            "Search Zenodo for records of zenodo.type (software) and append them to <run>/records.jsonl, "
            "oldest first, unique by id, without those matching zenodo.exclude. More than 10,000 records "
            "are reached by splitting the search into date windows. Resumable: run it again after an "
            "interruption and it continues; run it again when finished and it adds nothing. A harvest that "
            "stops on an error (Zenodo unreachable, or answering other records than asked) exits with status 1 "
            "and is not complete: the same command continues it. With --since, "
            "adds the records created or modified after a date (how a dataset is kept up to date)."
        ),
    )
    harvest.add_argument("-c", "--config", required=True, metavar="CONFIG", help="YAML config (docs/configuration.md)")
    harvest.add_argument("--limit", type=_positive_int, metavar="N",
                         help="harvest at most N records (default: zenodo.limit)")
    harvest.add_argument("--api-url", metavar="URL", help="Zenodo API base URL (default: zenodo.api_url)")
    harvest.add_argument("--since", metavar="DATE",
                         help="only records created or modified on or after DATE (2024-01-31), appended")
    harvest.set_defaults(func=cmd_harvest)

    fetch = commands.add_parser(
        "fetch",
        help="download every record's archive into <run>/cache/ (for compute nodes without internet)",
        description=(
            "Fetch-first mode: on a login or transfer node with internet, download the archives of every "
            "harvested record that is not complete into RUN_DIR/cache/<id>/, verified against Zenodo's md5 "
            "(or the GitHub release zip when a record has no archive). Workers with fetch.offline: true then "
            "rasterize from the cache without any network. Requests keep to the run's whole budget, the tighter of "
            "zenodo.rate_limit_per_min and zenodo.rate_limit_per_hour (unset: Zenodo's published limits, 60 a "
            "minute and 2,000 an hour for a guest, 100 and 5,000 with a token in zenodo.token_env). Run it again "
            "to retry what failed."
        ),
    )
    fetch.add_argument("run_dir", metavar="RUN_DIR", help="the run directory (<scratch>/<name>)")
    fetch.set_defaults(func=cmd_fetch)

    submit = commands.add_parser(
        "submit",
        help="shard the harvested records and run them as SLURM job arrays (or locally)",
        description=(
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
        ),
    )
    submit.add_argument("-c", "--config", required=True, metavar="CONFIG", help="YAML config (docs/configuration.md)")
    submit.add_argument("--executor", choices=["auto", "slurm", "local", "debug"],
                        help="where the workers run (default: executor.kind; auto = slurm when sbatch is on PATH)")
    submit.add_argument("--dry-run", action="store_true",
                        help="print the plan and the job scripts (the arrays queued now, and the finishing job), "
                             "with the cluster limits read or assumed (MaxArraySize, the QOS's and association's "
                             "submit limits and what you have queued under them), how the tasks reach the queue (all "
                             "now, or in batches the finishing job queues as room frees) and the Python the jobs run; "
                             "write and submit nothing. Needs no SLURM on this machine")
    submit.add_argument("--records", type=_positive_int, metavar="N",
                        help="with --dry-run: preview the plan and the scripts for N records of equal size instead "
                             "of the harvest, which need not exist yet (no internet needed)")
    submit.set_defaults(func=cmd_submit)

    status = commands.add_parser(
        "status",
        help="records done/failed/pending, shards and their SLURM states, time left",
        description=(
            "Report a run from its run directory alone (no driver needs to be running): records done, failed "
            "by reason, quarantined and pending; shards done, running, pending and failed with SLURM's state "
            "(squeue for what is queued or running, sacct with every step for how the rest ended) such as "
            "OUT_OF_MEMORY or TIMEOUT; memory and time used against asked; the chain of rounds, and when it "
            "resumes while it waits for Zenodo's request budget (UTC, and in how long); the time left."
        ),
    )
    status.add_argument("run_dir", metavar="RUN_DIR", help="the run directory (<scratch>/<name>)")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(func=cmd_status)

    resume = commands.add_parser(
        "resume",
        help="re-plan and submit only what is not complete (a new chain of rounds)",
        description=(
            "Plan again the records that are neither complete, quarantined, nor still queued or running, and "
            "submit them with the run's frozen config (run.yaml), with a finishing job on SLURM (a new chain of "
            "rounds). Shards that died of OUT_OF_MEMORY get the memory they were seen to use and at least twice "
            "what they had; of TIMEOUT, twice the time (up to executor.slurm.max_mem_gb/max_time_min); a record "
            "that failed executor.max_attempts times is quarantined. A complete run submits nothing."
        ),
    )
    resume.add_argument("run_dir", metavar="RUN_DIR", help="the run directory (<scratch>/<name>)")
    resume.add_argument("--dry-run", action="store_true", help="print what would be submitted; submit nothing")
    resume.set_defaults(func=cmd_resume)

    pack = commands.add_parser(
        "pack",
        help="build the run's squashfs image once every record is done",
        description=(
            "Write manifest.jsonl, a README.md dataset card, records.jsonl and run.yaml into the image root "
            "(<run>/data/) and build <run>/<pack.image> with mksquashfs (zstd, 1 MiB blocks, root-owned, no "
            "xattrs, fixed timestamps: the same run packs to the same bytes), then <image>.md5 and .sha256, and "
            "verify the image against the manifest. Refuses while records are pending or failed."
        ),
    )
    pack.add_argument("run_dir", metavar="RUN_DIR", help="the run directory (<scratch>/<name>)")
    pack.add_argument("--allow-partial", action="store_true",
                      help="pack the records that are done even though others are pending or failed")
    pack.set_defaults(func=cmd_pack)

    run = commands.add_parser(
        "run",
        help="the main job: harvest, submit, rounds for what failed, pack",
        description=(
            "The whole pipeline in one command: harvest, submit (SLURM arrays, or local workers), wait with a "
            "live progress display, another round for what failed until every record is done or quarantined "
            "(at most executor.max_attempts rounds; when Zenodo's request budget stops a round, the next one "
            "waits for the budget and does not count), and pack the image; on SLURM the finishing jobs take those "
            "decisions and run follows them, taking them itself when no job of the chain is left to decide (one "
            "could not be queued, was cancelled or died). Safe to run again at any time: it picks up where things "
            "stand. "
            "Ctrl-C leaves the run resumable. With SLURM and --no-wait it returns once the jobs are queued."
        ),
    )
    run.add_argument("-c", "--config", required=True, metavar="CONFIG", help="YAML config (docs/configuration.md)")
    run.add_argument("--limit", type=_positive_int, metavar="N",
                     help="harvest at most N records (default: zenodo.limit)")
    run.add_argument("--executor", choices=["auto", "slurm", "local", "debug"],
                     help="where the workers run (default: executor.kind)")
    run.add_argument("--no-wait", action="store_true",
                     help="SLURM: return once the arrays and their finishing job are queued; the run finishes alone")
    run.set_defaults(func=cmd_run)

    organize = commands.add_parser(
        "organize",
        help="export the images by language (file extension) for Kaggle",
        description=(
            "For each file extension of a list (default: the 22 of the published Kaggle dataset, matched "
            "exactly, so R and r differ), one PNG per 80x80 image at DIR/<ext>/<record id>/<record id>_<i>.png, "
            "an index.csv mapping each PNG to its record, file path and image number, one deterministic "
            "<ext>.tar.gz per extension and a datapackage.json (Kaggle dataset-metadata and Frictionless data "
            "package at once). RUN_DIR may also be a packed image (.sqsh)."
        ),
    )
    organize.add_argument("source", metavar="RUN_DIR", help="the run directory, or its packed image (.sqsh)")
    organize.add_argument("--out", required=True, metavar="DIR", help="the export folder (replaced whole)")
    organize.add_argument("--extensions", metavar="EXT,EXT",
                          help=f"comma-separated extensions (default: {','.join(DEFAULT_EXTENSIONS)})")
    organize.add_argument("--png", choices=["grey", "palette"], default="grey",
                          help="grey: code points clipped to 255 (the published convention); palette: raw "
                               "values where they fit, character classes coloured")
    organize.add_argument("--workers", type=_positive_int, metavar="N", help="processes (default: the CPU count)")
    organize.set_defaults(func=cmd_organize)

    publish = commands.add_parser("publish", help="share an export: publish kaggle DIR ...",
                                  description="Publish an export made by `zenodo-hpc organize`.")
    targets = publish.add_subparsers(dest="target", metavar="TARGET")
    targets.required = True
    kaggle = targets.add_parser(
        "kaggle",
        help="create (private unless --public) or update a Kaggle dataset",
        description=(
            "Upload an organize export (DIR) as a Kaggle dataset through the official kaggle client "
            "(the kaggle extra: python -m pip install 'kaggle>=2.2.5,<3' six). Checks before any network call what "
            "Kaggle would refuse (slug and title 6-50 characters, exactly one known license, the files exist, at "
            "most 1,000 files). Creates "
            "the dataset private unless --public, or a new version when it exists (--version-notes required). "
            "Credentials, where the kaggle client reads them: KAGGLE_API_TOKEN, ~/.kaggle/access_token, "
            "KAGGLE_USERNAME/KAGGLE_KEY, or kaggle.json in $KAGGLE_CONFIG_DIR, else in ~/.kaggle/ when that folder "
            "exists, else (Linux) in ~/.config/kaggle/; never printed."
        ),
    )
    kaggle.add_argument("folder", metavar="DIR", help="the export folder made by `zenodo-hpc organize`")
    kaggle.add_argument("--username", required=True, metavar="U", help="your Kaggle user name (the dataset's owner)")
    kaggle.add_argument("--title", required=True, metavar="T", help="the dataset's title (6-50 characters)")
    kaggle.add_argument("--name", metavar="N", help="the dataset's slug: lowercase letters, digits, hyphens (6-50)")
    kaggle.add_argument("--keywords", metavar="a,b", help="comma-separated keywords")
    kaggle.add_argument("--license", metavar="L", help="one Kaggle license, e.g. CC-BY-4.0 (default: the export's)")
    kaggle.add_argument("--public", action="store_true", help="make the dataset public (default: private)")
    kaggle.add_argument("--version-notes", metavar="TEXT", help="notes of a new version (required when it exists)")
    kaggle.set_defaults(func=cmd_publish_kaggle)

    demo = commands.add_parser(
        "demo",
        help="the whole pipeline offline on a built-in sample, ending in a verified image",
        description=(
            "Publish a few dozen records of real source code that come with the package (files of CPython 3.11.7: "
            "standard-library packages, C headers, IDLE's docs) on a loopback Zenodo double, then harvest, fetch, "
            "rasterize (local workers, or SLURM when a cluster answers), pack and verify the image, show the status "
            "and export by language. Needs no internet. Prints one line per stage, where everything is and what to "
            "try next (commands that run as printed from here); the log goes to DIR/run/logs/demo.log."
        ),
    )
    demo.add_argument("--out", default="zenodo-hpc-demo", metavar="DIR",
                      help="folder for the demo's run (default: ./zenodo-hpc-demo; run again to pick up)")
    demo.add_argument("--executor", choices=["local", "slurm", "debug"],
                      help="where the workers run (default: slurm when a cluster answers, else local)")
    demo.set_defaults(func=cmd_demo)

    report = commands.add_parser(
        "report",
        help="one self-contained HTML page of plots: the run and its dataset",
        description=(
            "Write one HTML file (default RUN_DIR/report.html) that opens anywhere, with no network: figures of "
            "the run (records done, failed by reason, quarantined, pending; the rounds and what each planned "
            "again; time and memory per task against what was asked, from SLURM accounting when it answers; "
            "throughput; the API budget; what is left and how long) and of its dataset (files and code images per "
            "extension, images per file and per record, files skipped by reason, licenses, records by year, the "
            "largest records, sample code images per language), and records added per release when there are "
            "two or more. Works from the run directory alone, on a run in progress too. Needs matplotlib: "
            "python -m pip install 'matplotlib>=3.6' (the report extra)."
        ),
    )
    report.add_argument("run_dir", metavar="RUN_DIR", help="the run directory (<scratch>/<name>)")
    report.add_argument("--out", metavar="FILE", help="the HTML file to write (default: RUN_DIR/report.html)")
    report.add_argument("--png", choices=["grey", "palette"], default="grey",
                        help="how the sample code images are rendered, as organize --png (default: grey)")
    report.set_defaults(func=cmd_report)

    update = commands.add_parser(
        "update",
        help="the next release: what Zenodo gained since the last one, processed, packed, published",
        description=(
            "On an existing run directory (or a new one, for the first release): harvest what Zenodo gained or "
            "changed since the last release (a day of overlap, deduplicated by id), process only what is not "
            "done (the same shards, markers and SLURM arrays as submit; done records are never redone; first, "
            "every done record's files are checked against its done marker, for a scratch that purges: what is "
            "missing or damaged is made again, a folder whose marker alone is gone is taken back), then "
            "make the next release: a verified image named after it (e.g. zenodo-ml-2026.11.29.sqsh) with "
            "<run>/releases/<version>/ (manifest, checksums, CHANGELOG.md) and the Atom feed releases/feed.xml; "
            "a new version of the Kaggle dataset and of the Zenodo record when publish is configured, and a "
            "notice to notify.webhook_url. With nothing new it says so and makes no release. On SLURM it "
            "returns once the work is queued: the finishing job makes the release. The last release's records "
            "are checked with Zenodo first: those deleted (410, 404) or no longer open leave the release, its "
            "image and its exports, named as removed in the changelog, and their folders are removed from "
            "data/ (unless --keep-withdrawn or dataset.keep_withdrawn); records named by dataset.exclude are "
            "left out too (docs/updating.md)."
        ),
    )
    update.add_argument("-c", "--config", required=True, metavar="CONFIG", help="YAML config (docs/configuration.md)")
    update.add_argument("--executor", choices=["auto", "slurm", "local", "debug"],
                        help="where the workers run (default: executor.kind)")
    update.add_argument("--keep-withdrawn", action="store_true",
                        help="keep the data/<id>/ folders of records withdrawn from Zenodo (default: "
                             "dataset.keep_withdrawn, false: they are removed); they leave the release either way")
    update.set_defaults(func=cmd_update)

    schedule = commands.add_parser(
        "schedule",
        help="run update every month (week, day): scrontab, a self-queuing SLURM job, or a crontab line",
        description=(
            "Install `zenodo-hpc update -c CONFIG` as a recurring job: in your scrontab (SLURM's cron) when the "
            "cluster has it; else as a SLURM job that starts at the next date (sbatch --begin), runs the update "
            "and queues itself again; without SLURM, print the crontab line to add. Shows what it installed. "
            "--remove takes it out again."
        ),
    )
    schedule.add_argument("-c", "--config", required=True, metavar="CONFIG", help="YAML config of the run")
    schedule.add_argument("--every", choices=["day", "week", "month"], default="month",
                          help="how often (default: month, at 03:00 on the first)")
    schedule.add_argument("--remove", action="store_true", help="remove the schedule installed for CONFIG")
    schedule.set_defaults(func=cmd_schedule)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return value


class _StderrHandler(logging.StreamHandler):
    """Always writes to the current ``sys.stderr`` (tests and tqdm swap it)."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001
        pass


def setup_logging(debug: bool) -> None:
    """Log lines on stderr when not on a terminal (CI, SLURM logs); on a terminal, progress bars instead."""
    logger = logging.getLogger("zenodo_hpc")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(handler)
        logger.propagate = False
    quiet_terminal = sys.stderr.isatty() and not debug
    logger.setLevel(logging.DEBUG if debug else logging.WARNING if quiet_terminal else logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.debug)
    try:
        return args.func(args)
    except UserError as exc:
        if args.debug:
            raise
        print(f"zenodo-hpc {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"zenodo-hpc {args.command}: interrupted; run the same command again to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:  # the machine's side: permissions, a full disk, a vanished mount
        if args.debug:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"zenodo-hpc {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # a bug: one line here, the traceback with --debug
        if args.debug:
            raise
        print(f"zenodo-hpc {args.command}: internal error: {type(exc).__name__}: {exc} "
              "(run again with --debug for the traceback, and please report it)", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
