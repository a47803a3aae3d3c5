"""The split (``train``, ``validation``, ``test``) of a record in the Parquet export, from its concept id.

A record's split is a function of Zenodo's concept id (``conceptrecid``) alone, so every version of one software
lands in the same split and no project leaks from ``train`` into ``test``. The id, behind a fixed salt, is hashed
with SHA-256 (never Python's ``hash()``, which changes with ``PYTHONHASHSEED`` from one process to the next); its
first 8 bytes, read as a big-endian integer, give a number ``u`` uniform in [0, 1) (its top 53 bits over 2**53:
a float holds 53, and all 64 over 2**64 would round up to 1.0 near the top), set against the
cumulative fractions of ``export.splits`` in a fixed order: ``u < train`` is ``train``, ``u < train + validation``
is ``validation``, the rest ``test``. A split of fraction 0 gets no record. The same id gives the same split on
every machine, Python and run, and changing the fractions moves only the concepts whose ``u`` lies between the old
and the new boundaries.

A record without a concept id (Zenodo gives one to every record today; a hand-made or old record may lack it)
is split by its own record id, as if it were a concept of one version.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from ..core.config import SplitsConfig

Split = Literal["train", "validation", "test"]
SPLITS: tuple[Split, ...] = ("train", "validation", "test")  # the order of the cumulative fractions: fixed

SALT = b"zenodo-ml/split/v1\x00"  # changing it reshuffles every concept between splits: never do it in place
_FLOAT_BITS = 53


def unit_interval(concept_id: str) -> float:
    """The concept's uniform number in [0, 1): the top 53 bits of SHA-256(salt + id)'s first 8 bytes, over 2**53."""
    digest = hashlib.sha256(SALT + concept_id.encode("utf-8")).digest()
    return (int.from_bytes(digest[:8], "big") >> (64 - _FLOAT_BITS)) / 2**_FLOAT_BITS


def split_of(concept_id: str, fractions: SplitsConfig) -> Split:
    """The split of every record of this concept (``export.splits`` gives ``fractions``; they add up to 1)."""
    u = unit_interval(concept_id)
    bound = 0.0
    for name in SPLITS:
        bound += getattr(fractions, name)
        if u < bound:
            return name
    # Rounding can leave the sum of the fractions a hair under 1: such a u belongs to the last split that has
    # any share (never to a split of fraction 0).
    return next(name for name in reversed(SPLITS) if getattr(fractions, name) > 0)


def split_key(concept_id: str | None, record_id: str) -> str:
    """The id that decides a record's split: its concept id, or its own id when it has none."""
    return concept_id if concept_id else record_id
