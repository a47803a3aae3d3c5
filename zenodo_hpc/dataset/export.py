"""``zenodo-hpc export``: the dataset as ML users load it today, Parquet shards and a dataset card in the layout
the Hugging Face Hub and ``datasets.load_dataset(DIR)`` read (docs/export-and-hub.md).

One row per rasterized file, with the columns of :data:`COLUMNS`; its ``images`` equal the h5's, ``content`` is
the text they were made from (credentials masked when the record was processed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

# The columns, in order, and what each holds (docs/export-and-hub.md lists them for users).
COLUMNS = (
    "record_id",  # Zenodo's record id (string, as Zenodo's JSON gives it)
    "concept_id",  # Zenodo's conceptrecid: every version of one software shares it (null when the record has none)
    "doi", "concept_doi", "version", "title",  # as the record gives them (null when absent)
    "license",  # Zenodo's license id as given, lower case; null when the record has none
    "license_category",  # permissive, copyleft, other or none (core/licenses.py)
    "path",  # the file's path as in the h5
    "extension",  # after the last dot of its name (organize's rule); null when it has none
    "size_bytes", "sha256",  # of the file's published bytes (credentials masked)
    "content",  # those bytes as text (UTF-8; bytes that are not UTF-8 become U+FFFD, the sha256 stays the bytes')
    "images",  # its (n, height, width) code-point images, uint32, equal to the h5's
    "n_images",
    "near_dup_cluster",  # "<record_id>/<path>" of the first row of its near-duplicate cluster (its own when none)
)


def parquet_schema(height: int, width: int) -> pa.Schema:
    """The shards' schema: strings, ``size_bytes`` int64, ``n_images`` int32, and ``images`` a list of
    ``height`` x ``width`` fixed-size lists of uint32, which ``datasets`` reads as ``List(List(List(uint32,
    length=width), length=height))`` and numpy as an ``(n, height, width)`` array."""
    import pyarrow as pa

    image = pa.list_(pa.list_(pa.uint32(), width), height)
    types = {"size_bytes": pa.int64(), "images": pa.list_(image), "n_images": pa.int32()}
    required = {"record_id", "license_category", "path", "size_bytes", "sha256", "content", "images", "n_images",
                "near_dup_cluster"}
    return pa.schema([pa.field(name, types.get(name, pa.string()), nullable=name not in required)
                      for name in COLUMNS])
