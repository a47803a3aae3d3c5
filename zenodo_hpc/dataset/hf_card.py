"""The dataset card of the Parquet export: the ``README.md`` that the Hugging Face Hub shows and that
``datasets.load_dataset(DIR)`` reads (docs/export-and-hub.md).

Its YAML front matter is the Hub's dataset card metadata (``datasetcard.md`` of ``huggingface/hub-docs``):
``license`` (the Hub's ids, :func:`hub_license`), ``configs`` (the shards of each split, so that ``datasets`` finds
exactly these splits) and ``dataset_info.features`` (the columns' types, as ``datasets`` itself writes them for
``export.parquet_schema``). Its body says what a row is, how to load the folder, and the
release's facts (:class:`CardFacts`): splits, licenses, deduplication, masked credentials, and how an author asks
to be left out. Everything that comes from a record is escaped: YAML through ``yaml.safe_dump``, Markdown table
cells by :func:`cell`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from ..core.licenses import canonical_id, license_category


@dataclass
class CardFacts:
    """What one export holds, for its card (export.py gathers it while writing the shards)."""

    pretty_name: str  # "Zenodo-ML"
    source: str  # what was exported, for the text: "run zenodo-ml" / "image zenodo-ml-2026.12.sqsh"
    height: int  # the images' shape (raster.height, raster.width)
    width: int
    split_fractions: dict[str, float]  # export.splits: {"train": 0.9, "validation": 0.05, "test": 0.05}
    data_files: dict[str, list[str]]  # split -> its shards relative to DIR; splits with no rows absent
    rows: dict[str, int]  # rows per split (splits with no rows absent)
    records: dict[str, int]  # records per split
    records_per_license: dict[str, int]  # license id (lower case; "none": no license) -> records exported
    rows_per_license: dict[str, int]  # ... -> rows exported
    records_per_category: dict[str, int]  # permissive / copyleft / other / none -> records exported
    license_categories: tuple[str, ...]  # the categories exported (export.license_categories)
    license_left_out: dict[str, int]  # license id or "none" -> records left out for their category
    dedup: dict[str, object]  # zenodo_hpc.dataset.dedup.DedupStats.as_dict()
    near_duplicates: str  # export.near_duplicates: "keep" or "drop"
    opted_out: int  # records left out by dataset.exclude in a run dir; 0 for an image (it already lacks them)
    withdrawn: int  # records left out because Zenodo withdrew them
    masked: int  # credentials masked in the exported rows' files
    generated: str  # zenodo-hpc version that wrote it, e.g. "zenodo-hpc 0.9.0"


NO_LICENSE = "none"  # the key of CardFacts' license counts for records without a license
SPLIT_ORDER = ("train", "validation", "test")
TAGS = ("code", "zenodo")
# huggingface/huggingface.js, packages/tasks/src/pipelines.ts (commit fe42e68017ffc76d09922ea8f9b38a6964345710):
# the Hub's task ids; source code is what text-generation models are trained on (The Stack declares the same).
TASK_CATEGORIES = ("text-generation",)
# The Hub's size buckets, smallest first, each with the row count it starts at: huggingface/datasets,
# src/datasets/utils/resources/size_categories.json (commit bb42d5c8813e12df44ddf527b08752e8047458f7, also in
# datasets 5.2.0's wheel), as huggingface_hub 2.5's DatasetCardData documents them ("unknown" left out: the count is
# known).
SIZE_CATEGORIES = (("n<1K", 0), ("1K<n<10K", 10**3), ("10K<n<100K", 10**4), ("100K<n<1M", 10**5),
                   ("1M<n<10M", 10**6), ("10M<n<100M", 10**7), ("100M<n<1B", 10**8), ("1B<n<10B", 10**9),
                   ("10B<n<100B", 10**10), ("100B<n<1T", 10**11), ("n>1T", 10**12))
HUB_OTHER = "other"
# license_name: the Hub's field for what `other` stands for (hub-docs datasetcard.md: "specify an id for it");
# license_details: its textual description of it (the same page).
LICENSE_NAME = "various"
LICENSE_DETAILS = ("Each row carries its record's own license in its `license` column (Zenodo's id, lower case; "
                   "null: none); see the card's Licenses section.")
# Zenodo ids whose Hub id is a family the Hub lists without a version (hub_licenses.txt: "Open Database License
# family", ...): every version is that license.
HUB_FAMILIES = {"odbl-": "odbl", "odc-by-": "odc-by", "pddl-": "pddl", "gfdl-": "gfdl"}
# SPDX's GNU suffixes: "-only" is that version, "-or-later" that version or a later one at the user's choice: both
# are licensed under the version the Hub's base id names.
GNU_SUFFIXES = ("-only", "-or-later")
TOP_EXTENSIONS = 20  # rows of the card's deduplication table

# The shards' columns in order (export.COLUMNS), each with its type as the card's features write it (the
# images' type depends on the raster's shape: IMAGES) and what it holds, for users: export.COLUMNS is read from here.
# export.py imports this module, so this one does not import it back: a test checks that the names, order and types
# are those of export.parquet_schema as datasets reads it.
IMAGES = "images"
COLUMN_TABLE: tuple[tuple[str, str, str], ...] = (
    ("record_id", "string", "Zenodo's record id"),
    ("concept_id", "string", "Zenodo's concept id (`conceptrecid`): every version of one software shares it; "
                             "null when the record has none"),
    ("doi", "string", "the record's DOI; null when absent"),
    ("concept_doi", "string", "the DOI of all its versions; null when absent"),
    ("version", "string", "the version the record gives; null when absent"),
    ("title", "string", "the record's title; null when absent"),
    ("license", "string", "the record's license: Zenodo's id as given, lower case; null when the record has none"),
    ("license_category", "string", "`permissive`, `copyleft`, `other` or `none`"),
    ("path", "string", "the file's path inside the record's archives"),
    ("extension", "string", "after the last dot of the file's name; null when it has none"),
    ("size_bytes", "int64", "the size of the file's published bytes (credentials masked)"),
    ("sha256", "string", "the SHA-256 of those bytes, hex"),
    ("content", "string", "those bytes as text (UTF-8; bytes that are not UTF-8 become U+FFFD)"),
    (IMAGES, "", "its code images: each an array of the Unicode code points of the text's characters, one line "
                 "of the file a row"),
    ("n_images", "int32", "the number of images"),
    ("near_dup_cluster", "string", "`<record_id>/<path>` of the first row of its near-duplicate cluster (its own "
                                   "when none)"),
)

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|])")
_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029\x85\x0b\x0c]+")


# --- the license fields -------------------------------------------------------------------------------------


@functools.cache
def hub_license_ids() -> frozenset[str]:
    """The license ids the Hub accepts (``hub_licenses.txt`` beside this module says where they come from)."""
    text = resources.files("zenodo_hpc.dataset").joinpath("hub_licenses.txt").read_text(encoding="utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def hub_id(license_id: str) -> str | None:
    """The Hub's id for a Zenodo license id, or None when the Hub has none that means the same license."""
    hub = hub_license_ids()
    key = license_id.strip().lower()
    if key in (NO_LICENSE, HUB_OTHER, "unknown", "notspecified"):
        return None  # no license, or none readable: not a license the Hub can name
    for candidate in (key, canonical_id(key)):
        if candidate in hub:
            return candidate
        for suffix in GNU_SUFFIXES:
            if candidate.startswith(("gpl-", "lgpl-", "agpl-")) and candidate.endswith(suffix):
                base = candidate[: -len(suffix)]
                if base in hub:
                    return base
        for prefix, family in HUB_FAMILIES.items():
            if candidate.startswith(prefix) and family in hub:
                return family
    return None


def hub_license(license_ids: Iterable[str]) -> dict[str, object]:
    """The front matter's license fields for records with these license ids (``none``: no license).

    ``{"license": [the Hub's ids, sorted]}`` when the Hub knows every one; else ``other`` joins the list, with
    ``license_name`` and ``license_details`` saying that each row's ``license`` column holds its own.
    """
    ids = [str(i) for i in license_ids]
    mapped = {hub_id(i) for i in ids}
    known = sorted(m for m in mapped if m is not None)
    if ids and None not in mapped:
        return {"license": known}
    return {"license": sorted({*known, HUB_OTHER}), "license_name": LICENSE_NAME, "license_details": LICENSE_DETAILS}


# --- the features, as datasets writes them ------------------------------------------------------------------


def image_type(height: int, width: int) -> dict[str, Any]:
    """The ``images`` column's type as ``datasets`` 5 writes it: a list of ``height`` fixed-size lists of ``width``
    uint32 (``List(List(List(uint32, length=width), length=height))``)."""
    return {"list": {"list": {"list": "uint32", "length": width}, "length": height}}


def features(height: int, width: int) -> list[dict[str, Any]]:
    """``dataset_info.features`` of the shards: what ``datasets.Features.from_arrow_schema(parquet_schema(height,
    width))._to_yaml_list()`` gives, without importing ``datasets`` (heavy, and not a dependency)."""
    return [{"name": name, **image_type(height, width)} if name == IMAGES else {"name": name, "dtype": dtype}
            for name, dtype, _ in COLUMN_TABLE]


def type_text(kind: str | dict[str, Any]) -> str:
    """A column's type in words for the card's table: ``string``; ``list of 80x80 uint32 arrays``."""
    if isinstance(kind, str):
        return kind
    dims: list[str] = []
    inner: str | dict[str, Any] = kind["list"]
    while isinstance(inner, dict) and "length" in inner:
        dims.append(str(inner["length"]))
        inner = inner["list"]
    element = type_text(inner)
    if "length" in kind:  # a fixed-size list at the top: an array itself
        return f"{kind['length']}x{'x'.join(dims)} {element} array" if dims else f"{kind['length']} {element} array"
    return f"list of {'x'.join(dims)} {element} arrays" if dims else f"list of {element}"


# --- the front matter ---------------------------------------------------------------------------------------


def ordered_splits(splits: Iterable[str]) -> list[str]:
    """train, validation, test first, in that order; any other split after them, sorted."""
    names = set(splits)
    return [s for s in SPLIT_ORDER if s in names] + sorted(names - set(SPLIT_ORDER))


def size_category(rows: int) -> str:
    """The Hub's size bucket for this many rows."""
    return [name for name, start in SIZE_CATEGORIES if rows >= start][-1]


def front_matter(facts: CardFacts) -> dict[str, Any]:
    """The card's metadata: license, tags, size, the shards of each split and the features."""
    splits = [s for s in ordered_splits(facts.data_files) if facts.data_files[s]]
    return {
        "pretty_name": facts.pretty_name,
        **hub_license(facts.records_per_license),
        "tags": list(TAGS),
        "task_categories": list(TASK_CATEGORIES),
        "size_categories": [size_category(sum(facts.rows.values()))],
        "configs": [{"config_name": "default",
                     "data_files": [{"split": s, "path": list(facts.data_files[s])} for s in splits]}],
        # No `splits`: datasets takes a split's entry only with its num_bytes, the size of the split as Arrow in
        # memory, which only datasets' own preparation measures (splits.py, SplitDict._from_yaml_list); the rows per
        # split are in the body's table.
        "dataset_info": {"features": features(facts.height, facts.width)},
    }


# --- the body -----------------------------------------------------------------------------------------------


class Markdown(str):
    """Text of this module's own, already Markdown: a table cell keeps it as it is."""


def cell(value: object) -> str:
    """A Markdown table cell holding ``value`` as text: its markup characters (``|`` above all) escaped, its line
    breaks made spaces, so that a value from a record can neither end the cell nor the row."""
    if isinstance(value, Markdown):
        return str(value)
    return _MARKDOWN_SPECIAL.sub(r"\\\1", _LINE_BREAKS.sub(" ", str(value)))


def code(name: str) -> Markdown:
    """One of this module's own names (a column, a category) as inline code."""
    return Markdown(f"`{name}`")


def plural(n: int, word: str) -> str:
    return f"{number(n)} {word}{'' if n == 1 else 's'}"


def table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    """A Markdown table; every cell escaped."""
    head = [cell(h) for h in header]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def number(n: object) -> str:
    return f"{int(n):,}" if isinstance(n, int) else str(n)


def int_of(value: object) -> int:
    """A count from ``CardFacts.dedup`` (plain values from JSON or YAML): 0 when absent."""
    return int(value) if isinstance(value, (int, float)) else 0


def percent(fraction: object) -> str:
    return f"{float(fraction) * 100:.1f}%" if isinstance(fraction, (int, float)) else "?"


def by_count(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    """Most first, then by name: the order of the card's count tables."""
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def first_split(facts: CardFacts) -> str:
    splits = ordered_splits(facts.data_files)
    return splits[0] if splits else "train"


def about_section(facts: CardFacts) -> str:
    total = sum(facts.rows.values())
    records = sum(facts.records.values())
    return f"""# {cell(facts.pretty_name)}

Source code from the software records of [Zenodo](https://zenodo.org), as Zenodo-ML has published it since 2018:
one row per file that was rasterized, with the file's text and its code images. An image is a
{facts.height}x{facts.width} array of the Unicode code points of the file's characters: one line of the file a
row, cut at {facts.width} characters and padded with spaces (32); a file of more than {facts.height} lines has
several images, an empty file none. This release holds {plural(total, 'row')} from {plural(records, 'record')},
exported from {cell(facts.source)}.

## Columns

{table(("column", "type", "meaning"), columns_rows(facts))}
"""


def columns_rows(facts: CardFacts) -> list[tuple[str, str, str]]:
    return [(code(name), type_text(image_type(facts.height, facts.width) if name == IMAGES else dtype),
             Markdown(meaning)) for name, dtype, meaning in COLUMN_TABLE]


def load_section(facts: CardFacts) -> str:
    """Recipes that run as written from inside this folder (the tests run them). ``os.getcwd()``, not ``"."``:
    datasets 5.2 names a local dataset after its folder's name, and ``Path(".").name`` is empty (load.py,
    get_dataset_builder_class: "dataset_name should be specified but got None")."""
    split = first_split(facts)
    fence = "```"
    return f"""## Loading

Each recipe runs as it is from inside this folder; from the Hub, give `load_dataset` the repository's id
(`OWNER/NAME`) instead of the folder. With `datasets`:

{fence}python
import os

from datasets import load_dataset

ds = load_dataset(os.getcwd())
print(ds)
{fence}

A row's images as one `(n, {facts.height}, {facts.width})` numpy array:

{fence}python
import os

import numpy as np
from datasets import load_dataset

row = load_dataset(os.getcwd(), split="{split}")[0]
images = np.asarray(row["images"], dtype=np.uint32).reshape(-1, {facts.height}, {facts.width})  # n may be 0
print(images.shape)
{fence}

With pandas (every split at once):

{fence}python
import pandas as pd

df = pd.read_parquet("data/")
print(df.groupby("license_category", dropna=False).size())
{fence}

With DuckDB:

{fence}python
import duckdb

duckdb.sql("SELECT license, count(*) AS files FROM 'data/*.parquet' GROUP BY license ORDER BY files DESC").show()
{fence}
"""


def splits_section(facts: CardFacts) -> str:
    rows = [(s, percent(facts.split_fractions.get(s, 0.0)), number(facts.records.get(s, 0)),
             number(facts.rows.get(s, 0)), number(len(facts.data_files.get(s, []))))
            for s in ordered_splits({*facts.split_fractions, *facts.data_files})]
    return f"""## Splits

A record's split follows from its concept id (Zenodo's `conceptrecid`) alone, through a salted SHA-256: every
version of one software is in the same split, so no project leaks from `train` into `test`, and a record keeps its
split from one release to the next as long as the fractions stay the same. A split without rows has no file and is
not declared.

{table(("split", "fraction of concepts", "records", "rows", "files"), rows)}
"""


def licenses_section(facts: CardFacts) -> str:
    licenses = [(i, license_category(None if i == NO_LICENSE else i), number(n),
                 number(facts.rows_per_license.get(i, 0))) for i, n in by_count(facts.records_per_license)]
    categories = [(c, number(n)) for c, n in by_count(facts.records_per_category)]
    exported = ", ".join(cell(c) for c in facts.license_categories) or "none"
    if facts.license_left_out:
        left = ("Records left out for their license's category (their license, then how many):\n\n"
                + table(("license", "category", "records"),
                        [(i, license_category(None if i == NO_LICENSE else i), number(n))
                         for i, n in by_count(facts.license_left_out)]))
    else:
        left = "No record was left out for its license."
    return f"""## Licenses

Each row's `license` is its record's license, as the record's authors chose it on Zenodo (`none` below: the
record has none, and the column is null); `license_category` sorts it: `permissive` (use, change and share with
attribution at most), `copyleft` (what is shared stays under the same license), `other` (read the license: non-
commercial, no derivatives, custom or unknown) and `none`. The files keep their authors' licenses: whoever uses a
row must honour the license of its file. The front matter's `license` lists the Hub's names for these licenses
(`other` for those the Hub has no name for).

{table(("license", "category", "records", "rows"), licenses)}

Records per category:

{table(("category", "records"), categories)}

Categories exported: {exported}. {left}
"""


def dedup_section(facts: CardFacts) -> str:
    dedup = facts.dedup
    by_extension = dedup.get("by_extension")
    entries: dict[str, Any] = dict(by_extension) if isinstance(by_extension, Mapping) else {}
    top = sorted(entries.items(), key=lambda item: (-int(item[1].get("rows", 0)), item[0]))[:TOP_EXTENSIONS]
    total = dedup.get("total")
    rows = [(f".{ext}" if ext else "(none)", *dedup_counts(c)) for ext, c in top]
    if isinstance(total, Mapping):
        rows.append(("all", *dedup_counts(total)))
    kept = ("Near duplicates are kept: each row's `near_dup_cluster` names its cluster's first row, so that a "
            "user can keep one row a cluster." if facts.near_duplicates == "keep" else
            "Near duplicates were dropped: only each cluster's first row is in "
            f"({plural(int_of(dedup.get('dropped_near_duplicates')), 'row')} left out).")
    shown = f"the {TOP_EXTENSIONS} extensions with the most rows" if len(entries) > TOP_EXTENSIONS else "per extension"
    return f"""## Deduplication

Exact duplicates (the same SHA-256) are one row, the first by record id. Near duplicates are found with MinHash over
the set of 5-word shingles of each file (as The Stack does), at an estimated Jaccard similarity of 0.85 or more to a
cluster's first row. {kept} Files of fewer than 5 words are checked for exact duplicates only
({plural(int_of(dedup.get('not_compared')), 'row')}). Of {plural(int_of(dedup.get('rows')), 'row')} seen,
{number(int_of(dedup.get('written')))} were written. Rates ({shown}, of the rows seen):

{table(("extension", "rows seen", "exact duplicates", "exact rate", "near duplicates", "near rate"), rows)}
"""


def dedup_counts(counts: Mapping[str, Any]) -> tuple[str, str, str, str, str]:
    return (number(counts.get("rows", 0)), number(counts.get("exact_duplicates", 0)),
            percent(counts.get("exact_duplicate_rate", 0.0)), number(counts.get("near_duplicates", 0)),
            percent(counts.get("near_duplicate_rate", 0.0)))


def credentials_section(facts: CardFacts) -> str:
    return f"""## Credentials

Credentials (cloud keys, private key blocks, tokens of the big platforms, passwords in configuration files) were
found when each record was processed, and {number(facts.masked)} were masked in this release's files: each of
their characters is `*` in `content` and so in `images`, and `size_bytes` and `sha256` are those of the masked
text. No credential's value is in any file of the dataset or in this card.
"""


def opt_out_section(facts: CardFacts) -> str:
    if facts.source.startswith("image") and not facts.opted_out:
        opted = ("records its authors asked to leave out: none in this export, as the image it was made from "
                 "already lacks them")
    else:
        opted = f"left out at their authors' request: {plural(facts.opted_out, 'record')}"
    return f"""## Opting out

An author who wants a record left out opens a discussion in the Community tab of this dataset's repository (or
writes to its maintainers) naming the record id, its DOI, or the concept DOI (every version of the software).
The maintainers add it to their `dataset.exclude` file, and the next release leaves it out of every file: the
Parquet shards, the squashfs image, the Kaggle dataset and this repository.

In this release, {opted}; withdrawn from Zenodo and left out: {plural(facts.withdrawn, 'record')}.
"""


def dataset_card(facts: CardFacts) -> str:
    """The whole ``README.md`` of the export folder: YAML front matter, then the Markdown body."""
    meta = yaml.safe_dump(front_matter(facts), sort_keys=False, allow_unicode=True, width=1000)
    body = "\n".join((about_section(facts), load_section(facts), splits_section(facts), licenses_section(facts),
                      dedup_section(facts), credentials_section(facts), opt_out_section(facts)))
    return f"---\n{meta}---\n\n{body}\nGenerated by {cell(facts.generated)}.\n"
