"""The ``zenodo-hpc`` command line: a thin layer over the pipeline's functions.

Every command prints one clear line and exits non-zero on bad input (``--debug`` shows the traceback).
The commands are a table (:data:`COMMANDS`, as pip's lazy command table): ``zenodo-hpc --help`` lists them
from it, and only the command being run has its module imported (``zenodo_hpc/cli/<module>.py``: its options,
declared with the shared ones of ``options.py``, and its handler); each handler imports what it needs when it
runs. So ``--help``, ``--version`` and ``status`` load neither numpy, h5py, requests nor submitit
(tests/cli/test_cli.py checks it).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Container, Sequence
from dataclasses import dataclass
from typing import TextIO

from .. import __version__
from ..core.errors import UserError
from .options import EXIT_ERROR, EXIT_INTERRUPTED


@dataclass(frozen=True)
class Command:
    """A command of the table: its name, its module under ``zenodo_hpc/cli/`` (which has ``add_<name>``,
    declaring its options and its handler), and the line ``zenodo-hpc --help`` shows for it (None: internal)."""

    name: str
    module: str
    help: str | None = None

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        module = importlib.import_module(f"{__package__}.{self.module}")
        getattr(module, f"add_{self.name}")(parser)


COMMANDS = (
    Command("process", "process", "one archive or folder -> one record folder, no cluster"),
    Command("harvest", "harvest", "list Zenodo's software records into <run>/records.jsonl"),
    Command("fetch", "harvest",
            "download every record's archive into <run>/cache/ (for compute nodes without internet)"),
    Command("submit", "run", "shard the harvested records and run them as SLURM job arrays (or locally)"),
    Command("status", "status", "records done/failed/pending, shards and their SLURM states, time left"),
    Command("resume", "run", "re-plan and submit only what is not complete (a new chain of rounds)"),
    Command("pack", "pack", "build the run's squashfs image once every record is done"),
    Command("run", "run", "the main job: harvest, submit, rounds for what failed, pack"),
    Command("organize", "export", "export the images by language (file extension) for Kaggle"),
    Command("export", "export", "the Parquet export: shards by split and a dataset card, as the Hub and datasets read"),
    Command("publish", "export", "share an export: publish kaggle DIR ... or publish huggingface DIR --repo ..."),
    Command("demo", "demo", "the whole pipeline offline on a built-in sample, ending in a verified image"),
    Command("report", "report", "one self-contained HTML page of plots: the run and its dataset"),
    Command("update", "update",
            "the next release: what Zenodo gained since the last one, processed, packed, published"),
    Command("schedule", "update",
            "run update every month (week, day): scrontab, a self-queuing SLURM job, or a crontab line"),
)

# What the package's own processes run (cli/internal.py): not listed, nor offered to a mistyped command.
INTERNAL = (Command("worker", "internal"), Command("tick", "internal"))


def build_parser(load: Container[str | None] | None = None) -> argparse.ArgumentParser:
    """The command line, every command listed. The options of every command are declared (what the docs' tests
    read), or with ``load``, those of the commands it names only (an internal command among them): the other
    modules are not imported."""
    parser = argparse.ArgumentParser(
        prog="zenodo-hpc",
        description="Build the Zenodo-ML dataset (code images of Zenodo software records) on SLURM clusters.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for command in COMMANDS:
        sub = commands.add_parser(command.name, help=command.help)
        if load is None or command.name in load:
            command.add_to(sub)
    for command in INTERNAL:
        if load is not None and command.name in load:
            command.add_to(commands.add_parser(command.name))
    return parser


def chosen_command(argv: Sequence[str]) -> str | None:
    """The command a command line runs: its first word that is not an option (``zenodo-hpc`` itself has no
    option that takes a value), or None (``--help``, ``--version``, nothing)."""
    return next((word for word in argv if not word.startswith("-")), None)


class _StderrHandler(logging.StreamHandler):
    """Always writes to the current ``sys.stderr`` (tests and tqdm swap it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
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
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(load={chosen_command(argv)}).parse_args(argv)
    if args.command in {command.name for command in INTERNAL}:
        return args.func(args)  # a job's own process: its messages as it prints them, a bug's traceback in its log
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
