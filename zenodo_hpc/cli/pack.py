"""``zenodo-hpc pack``: the run's verified squashfs image (dataset/pack.py), with the report's figures."""

from __future__ import annotations

import argparse

from .options import add_run_dir


def add_pack(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Write manifest.jsonl, a README.md dataset card, records.jsonl and run.yaml into the image root "
        "(<run>/data/) and build <run>/<pack.image> with mksquashfs (zstd, 1 MiB blocks, root-owned, no "
        "xattrs, fixed timestamps: the same run packs to the same bytes), then <image>.md5 and .sha256, and "
        "verify the image against the manifest. Refuses while records are pending or failed."
    )
    add_run_dir(parser)
    parser.add_argument("--allow-partial", action="store_true",
                        help="pack the records that are done even though others are pending or failed")
    parser.set_defaults(func=cmd_pack)


def cmd_pack(args: argparse.Namespace) -> int:
    from ..core.state import load_run
    from ..dataset.pack import format_summary, pack
    from ..report import card_figures

    run, cfg = load_run(args.run_dir)
    print(format_summary(pack(run, cfg, allow_partial=args.allow_partial, figures=card_figures)))
    return 0
