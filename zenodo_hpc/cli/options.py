"""The options several commands share, declared once (as pip's ``cmdoptions``): same flag, same help.

A command module calls these on its parser; what differs between commands (whether ``-c`` is required, which
executors the demo offers) is an argument, so the help a user reads stays what it was.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

EXIT_ERROR = 1  # a one-line error (bad input, a failed stage)
EXIT_INTERRUPTED = 130  # Ctrl-C: the command continues where it stopped when run again

CONFIG_HELP = "YAML config (docs/configuration.md)"
EXECUTOR_HELP = "where the workers run (default: executor.kind)"


def positive_int(text: str) -> int:
    """An argparse type: a whole number, 0 or more (``--limit``, ``--records``, ``--workers``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return value


def add_config(parser: argparse.ArgumentParser, *, required: bool = True, help: str = CONFIG_HELP) -> None:
    """``-c/--config CONFIG``: the run's YAML config."""
    parser.add_argument("-c", "--config", required=required, metavar="CONFIG", help=help)


def add_run_dir(parser: argparse.ArgumentParser) -> None:
    """``RUN_DIR``: the run directory a command reads (its config is the frozen ``run.yaml`` in it)."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run directory (<scratch>/<name>)")


def add_executor(parser: argparse.ArgumentParser, *, help: str = EXECUTOR_HELP,
                 choices: Sequence[str] | None = None) -> None:
    """``--executor KIND``: where the workers run, one of the config's ``executor.kind`` values by default."""
    if choices is None:
        from ..core.config import EXECUTOR_KINDS  # the config's own list: a new kind is offered here too

        choices = EXECUTOR_KINDS
    parser.add_argument("--executor", choices=list(choices), help=help)


def add_limit(parser: argparse.ArgumentParser) -> None:
    """``--limit N``: how many records a harvest takes at most."""
    parser.add_argument("--limit", type=positive_int, metavar="N",
                        help="harvest at most N records (default: zenodo.limit)")


def add_png(parser: argparse.ArgumentParser, *, help: str) -> None:
    """``--png grey|palette``: how code images become PNGs (organize's export, report's samples)."""
    parser.add_argument("--png", choices=["grey", "palette"], default="grey", help=help)


def add_license_categories(parser: argparse.ArgumentParser, *, counted_in: str) -> None:
    """``--license-categories C,C``: which records an export keeps, by their license's category (organize, export);
    ``counted_in`` says where the records left out are counted."""
    parser.add_argument("--license-categories", metavar="C,C",
                        help="export only the records whose license is of these categories: permissive, copyleft, "
                             f"other, none (no license); the records left out are counted {counted_in} (default: the "
                             "run's export.license_categories; all for an image)")


def add_every(parser: argparse.ArgumentParser, *, default: str | None = None, help: str | None = None) -> None:
    """``--every day|week|month``: how often a schedule runs the update (``schedule``; required by the
    internal ``tick``, to which the queued job passes it)."""
    from ..drivers.schedule import EVERY

    parser.add_argument("--every", choices=EVERY, required=default is None, default=default, help=help)
