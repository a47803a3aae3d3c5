"""``zenodo-hpc process``: one archive or folder into one record folder, no cluster (record/process.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_config


def add_process(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Extract an archive (.zip, .tar, .tar.gz/.tgz, .tar.bz2, .tar.xz) or walk a folder, rasterize its "
        "text files into 80x80 code images and write the record folder OUT/ID/: images_ID.h5, metadata_ID.pkl "
        "and metadata_ID.json, and images_ID.pkl (the 2018 layout) when output.formats lists pkl. Prints a "
        "one-line summary."
    )
    parser.add_argument("source", metavar="ARCHIVE_OR_DIR", help="the archive or folder to process")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder that receives the record folder DIR/ID/ (created if missing)")
    parser.add_argument("--id", metavar="ID",
                        help="record id (default: the archive's name without its suffixes)")
    add_config(parser, required=False,
               help="YAML config for the raster:, extract: and output: settings (default: built-in)")
    parser.set_defaults(func=cmd_process)


def cmd_process(args: argparse.Namespace) -> int:
    from ..core.config import load_config
    from ..record.process import format_summary, process_path

    cfg = load_config(args.config)
    result = process_path(Path(args.source), Path(args.out), cfg, record_id=args.id)
    print(format_summary(result))
    return 0
