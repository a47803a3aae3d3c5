"""The ``zenodo-hpc`` command line: a thin layer over the pipeline's functions.

Every command prints one clear line and exits non-zero on bad input (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .config import load_config
from .errors import UserError

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def cmd_process(args: argparse.Namespace) -> int:
    from .process import format_summary, process_path

    cfg = load_config(args.config)
    result = process_path(Path(args.source), Path(args.out), cfg, record_id=args.id)
    print(format_summary(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
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
            "text files into 80x80 code images and write the record folder OUT/ID/ (images_ID.h5, "
            "images_ID.pkl, metadata_ID.pkl, metadata_ID.json). Prints a one-line summary."
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        if args.debug:
            raise
        print(f"zenodo-hpc {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"zenodo-hpc {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
