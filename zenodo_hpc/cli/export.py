"""``zenodo-hpc organize``, ``export``, ``publish kaggle`` and ``publish huggingface``: the images by language and
that export shared (dataset/organize.py, dataset/publish.py), the Parquet export (dataset/export.py), and a dataset
folder released on the Hub (dataset/hub.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_license_categories, add_png, positive_int


def add_organize(parser: argparse.ArgumentParser) -> None:
    from ..dataset.organize import DEFAULT_EXTENSIONS  # light: organize imports numpy, h5py and tqdm where used

    parser.description = (
        "For each file extension of a list (default: the 22 of the published Kaggle dataset, matched "
        "exactly, so R and r differ), one PNG per 80x80 image at DIR/<ext>/<record id>/<record id>_<i>.png, "
        "an index.csv mapping each PNG to its record, file path and image number, one deterministic "
        "<ext>.tar.gz per extension and a datapackage.json (Kaggle dataset-metadata and Frictionless data "
        "package at once) that lists the records' licenses (index.csv names each record's). RUN_DIR may also be a "
        "packed image (.sqsh)."
    )
    parser.add_argument("source", metavar="RUN_DIR", help="the run directory, or its packed image (.sqsh)")
    parser.add_argument("--out", required=True, metavar="DIR", help="the export folder (replaced whole)")
    parser.add_argument("--extensions", metavar="EXT,EXT",
                        help=f"comma-separated extensions (default: {','.join(DEFAULT_EXTENSIONS)})")
    add_png(parser, help="grey: code points clipped to 255 (the published convention); palette: raw "
                         "values where they fit, character classes coloured")
    parser.add_argument("--workers", type=positive_int, metavar="N", help="processes (default: the CPU count)")
    add_license_categories(parser, counted_in="and named")
    parser.set_defaults(func=cmd_organize)


def cmd_organize(args: argparse.Namespace) -> int:
    from ..dataset.organize import DEFAULT_EXTENSIONS, format_summary, organize

    result = organize(Path(args.source), Path(args.out), extensions=args.extensions or DEFAULT_EXTENSIONS,
                      png=args.png, workers=args.workers, license_categories=args.license_categories)
    print(format_summary(result))
    return 0


def add_export(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Write the dataset as ML users load it: Parquet shards under DIR/data/ (train, validation and test: a "
        "record's split follows its concept id, so every version of one software lands in the same split) and "
        "DIR/README.md, a dataset card that datasets.load_dataset(DIR), pandas, DuckDB and the Hugging Face Hub "
        "read. One row per rasterized file: its record's ids, DOIs, version, title and license, its path, "
        "extension, size, sha256, text (credentials masked) and code images. Exact duplicates (same sha256) are "
        "one row, the first by record id; near duplicates (MinHash, Jaccard >= 0.85) share a near_dup_cluster, or "
        "are left out with --near-duplicates drop. Records withdrawn from Zenodo or named by dataset.exclude are "
        "never exported. Needs the export extra: python -m pip install 'pyarrow>=14' 'datasketch>=2.0,<3'. "
        "RUN_DIR may also be a packed image (.sqsh)."
    )
    parser.add_argument("source", metavar="RUN_DIR", help="the run directory, or its packed image (.sqsh)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="the export folder (replaced whole when complete: new, empty or an earlier export)")
    add_license_categories(parser, counted_in="in the card")
    parser.add_argument("--near-duplicates", choices=("keep", "drop"),
                        help="keep near duplicates, marked by near_dup_cluster, or drop them (default: the run's "
                             "export.near_duplicates; keep for an image)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="show a progress bar (default: when stderr is a terminal)")
    parser.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from ..dataset.export import export_dataset, export_settings, format_summary

    settings = export_settings(Path(args.source), license_categories=args.license_categories,
                               near_duplicates=args.near_duplicates)
    print(format_summary(export_dataset(Path(args.source), Path(args.out), settings=settings,
                                        progress=args.progress)))
    return 0


def add_publish(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Publish an export: made by `zenodo-hpc organize` (kaggle), or a dataset folder made by "
                          "the Parquet export (huggingface).")
    targets = parser.add_subparsers(dest="target", metavar="TARGET")
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
    add_publish_huggingface(targets)


def add_publish_huggingface(targets: argparse._SubParsersAction) -> None:
    hub = targets.add_parser(
        "huggingface",
        help="publish a dataset folder as a release of a Hugging Face dataset repository (private unless --public)",
        description=(
            "Upload a dataset folder (DIR: README.md, the dataset card, and the files under data/) to the Hugging "
            "Face Hub through the official client (the huggingface extra: python -m pip install "
            "'huggingface_hub>=2.5,<2.6'). Checks the folder, --repo and --tag before any network call. Creates "
            "the dataset repository when it does not exist (private unless --public), then makes one commit on "
            "main holding the folder (files under data/ the folder has not are deleted, files outside data/ "
            "other than README.md are left alone; older releases stay whole at their tags) and tags it. "
            "Uploads go through git LFS (not Xet). A failed upload: run the same command again, it sends only "
            "what the Hub lacks. Token: "
            "HF_TOKEN, else the one `hf auth login` stored; sent only to the Hub (HF_ENDPOINT, default "
            "https://huggingface.co), never printed."
        ),
    )
    hub.add_argument("folder", metavar="DIR", help="the dataset folder: README.md and data/")
    hub.add_argument("--repo", required=True, metavar="OWNER/NAME", help="the dataset repository, e.g. alice/zenodo-ml")
    hub.add_argument("--public", action="store_true", help="make a new repository public (default: private)")
    hub.add_argument("--tag", metavar="TAG",
                     help="the release's tag (default: the UTC date, 2026.12.07, then 2026.12.07.2, ...)")
    hub.add_argument("--message", metavar="TEXT", help="the commit message (default: Release TAG)")
    hub.set_defaults(func=cmd_publish_huggingface)


def cmd_publish_huggingface(args: argparse.Namespace) -> int:
    from ..dataset.hub import format_summary, publish_huggingface

    result = publish_huggingface(Path(args.folder), args.repo, public=args.public, tag=args.tag,
                                 message=args.message)
    print(format_summary(result))
    return 0


def cmd_publish_kaggle(args: argparse.Namespace) -> int:
    from ..dataset.publish import format_summary, publish_kaggle

    keywords = args.keywords.split(",") if args.keywords is not None else None
    result = publish_kaggle(Path(args.folder), username=args.username, title=args.title, name=args.name,
                            keywords=keywords, license=args.license, public=args.public,
                            version_notes=args.version_notes)
    print(format_summary(result))
    return 0
