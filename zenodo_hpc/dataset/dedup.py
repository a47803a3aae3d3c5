"""Deduplication of the Parquet export, one row at a time, over rows that arrive in record-id order.

**Exact.** Rows with the same SHA-256 (of the file's published bytes: after credential masking) are one row: the
first by record id is written, the others are counted per extension for the dataset card. State: a set of the
digests seen, 32 bytes each as ``bytes`` (100 to 170 bytes a row with the object's header and the set's table).

**Near.** As The Stack (bigcode-dataset's ``near_deduplication/minhash_deduplication.py``) and datatrove
(``pipeline/dedup/minhash.py``, ``MinhashConfig``) do: MinHash over the set of 5-gram word shingles, with
datasketch's ``MinHash`` and ``MinHashLSH`` (threshold 0.85). What is followed, and where it differs:

- words: maximal runs of word characters (``\\w+``). The Stack splits on ``[^A-Za-z_0-9]``; ``\\w`` is the same on
  ASCII and also keeps letters of other scripts (comments in Chinese, identifiers in Greek) as words instead of
  throwing them away. No lower-casing and no punctuation step (datatrove's ``simplify_text`` is for prose; in code
  case and punctuation carry meaning, and The Stack keeps case too);
- shingles: every run of 5 consecutive words joined by a space, as a set (The Stack, datatrove ``n_grams=5``); a
  text of fewer than 5 words has none and is not compared (datatrove skips it too; the exact check still holds);
- hashing: a 32-bit hash per shingle as in both (they take SHA-1's first 4 bytes of the shingle's text; here
  SHA-1 of each word, combined per shingle in numpy: :func:`shingle_hashes`, 1.7x faster in all), then
  datasketch's MinHash with 128 permutations (datatrove uses 112, The Stack 256; 128 is datasketch's default and
  keeps a signature at 512 bytes with datasketch 2's 32-bit ``affine32`` scheme), seed 1;
- LSH: datasketch picks the bands for a threshold of 0.85 (false positives and negatives weighted equally); each
  candidate it returns is then checked: the row is a near duplicate only if the estimated Jaccard similarity
  (the fraction of equal signature values) is at least 0.85. The Stack takes LSH candidates as they come.

A row that matches an earlier row joins that row's cluster; a row that matches none starts its own cluster and is
the only kind put in the index, so every member of a cluster is within 0.85 of its first row (star clusters, no
chains, and an index that grows with the clusters, not with the rows). ``near_dup_cluster`` is the id of the
cluster's first row by record id, ``<record_id>/<path>``: re-running the export on the same records gives the same
ids, and new records (Zenodo's ids only grow) never rename an existing cluster. A row in no cluster of others
carries its own id, so the value can be written as soon as the row is seen (a streaming writer cannot go back to
mark a first row once a second one turns up). With ``export.near_duplicates: drop`` only each cluster's first row
is written.

**Memory**, measured by ``benchmarks/bench_dedup.py`` (benchmarks/RESULTS.md): the exact set for every row, plus
for each cluster's first row its signature (512 bytes), its id and datasketch's index (one bucket key and one set
per band): ``INDEX_BYTES_PER_ROW`` below is the bound this module states. At millions of rows that is gigabytes:
datasketch's ``storage_config`` can move the index to Redis (not used here), or the export can be run per
language, whose files rarely near-duplicate each other's.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..core.config import NEAR_DUPLICATE_CHOICES
from ..core.errors import UserError

if TYPE_CHECKING:
    from datasketch import MinHash

SHINGLE_WORDS = 5  # words per shingle, as The Stack and datatrove
THRESHOLD = 0.85  # Jaccard similarity from which two files are near duplicates
NUM_PERM = 128  # MinHash permutations (datasketch's default)
SEED = 1  # the permutations' seed: fixed, so that a re-run finds the same clusters
DIGEST_BYTES = 32  # SHA-256
# A 32-byte bytes object (72 bytes allocated) and its share of the set's table, 16 bytes a slot at 1.7 to 6.7 slots
# an entry as the table grows by 4x: measured 98-170 bytes a row from 1,000 to 200,000 rows.
EXACT_BYTES_PER_ROW = 180
# A cluster's first row: its signature (512), id (~80), datasketch's keys entry (~900) and 8 buckets (a set each,
# ~2,200). Measured 3,600-4,500 a row from 168 to 5,884 rows (tests, bench_dedup.py: 4,473 at 488, 3,638 at
# 5,884); dict and set tables double as they grow, so the amortized figure moves by several hundred bytes.
INDEX_BYTES_PER_ROW = 5_000

BATCH = 8_192  # shingles per datasketch call: its temporary array is BATCH x NUM_PERM x 4 bytes (4 MB)

_WORD = re.compile(r"\w+")
_SCHEME = "affine32"  # datasketch 2's default, named: the shared permutations below must say theirs
# The export extra, as pyproject pins it: zenodo-hpc is not on PyPI, so the hint names the package itself.
DATASKETCH_REQUIREMENT = "'datasketch>=2.0,<3'"
INSTALL_HINT = f"python -m pip install {DATASKETCH_REQUIREMENT}"
# Odd 64-bit multipliers, one per word position of a shingle (SHA-512's initial values: the fractional parts of
# the square roots of the first 8 primes, made odd): fixed, so that shingle hashes and clusters are the same in
# every run. Shingles of up to 8 words.
_POSITION_MULTIPLIERS = tuple(np.uint64(m | 1) for m in (
    0x6A09E667F3BCC908, 0xBB67AE8584CAA73B, 0x3C6EF372FE94F82B, 0xA54FF53A5F1D36F1, 0x510E527FADE682D1,
    0x9B05688C2B3E6C1F, 0x1F83D9ABFB41BD6B, 0x5BE0CD19137E2179))

Reason = Literal["exact", "near"]


def row_id(record_id: int | str, path: str) -> str:
    """A row's stable id, and so the ``near_dup_cluster`` of the clusters it starts: ``<record_id>/<path>``."""
    return f"{record_id}/{path}"


def shingles(text: str, words: int = SHINGLE_WORDS) -> set[bytes]:
    """The text's set of ``words``-word shingles, each the words joined by a space, UTF-8 encoded."""
    tokens = _WORD.findall(text)
    return {" ".join(tokens[i:i + words]).encode("utf-8") for i in range(len(tokens) - words + 1)}


def jaccard(a: set[bytes], b: set[bytes]) -> float:
    """The exact Jaccard similarity of two shingle sets (tests and measurements; the export estimates it)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _datasketch() -> ModuleType:
    """datasketch, the export extra's near-duplicate search; missing, one line saying how to install it."""
    try:
        import datasketch
    except ImportError:
        raise UserError(f"the Parquet export's near-duplicate search needs datasketch: {INSTALL_HINT}") from None
    return datasketch


@functools.cache
def _permutations() -> Any:
    """The MinHash permutations of (NUM_PERM, SEED), drawn once and shared by every row's MinHash."""
    return _datasketch().MinHash(num_perm=NUM_PERM, seed=SEED, scheme=_SCHEME).permutations


def shingle_hashes(text: str, words: int = SHINGLE_WORDS) -> np.ndarray:
    """The 32-bit hashes of the text's distinct shingles (those of :func:`shingles`), sorted.

    Each distinct word is hashed once (SHA-1's first 8 bytes); a shingle's hash is the top 32 bits of the sum of
    its words' hashes times a fixed odd multiplier per position (mod 2**64), in numpy. The Stack and datatrove
    hash each shingle's text with SHA-1 instead, a Python call per shingle: the MinHash in all is 1.7x slower
    that way (bench_dedup.py), for the same sets (any hash that rarely collides on one file's shingles).
    """
    if not 1 <= words <= len(_POSITION_MULTIPLIERS):
        raise ValueError(f"shingles of 1 to {len(_POSITION_MULTIPLIERS)} words, not {words}")
    tokens = _WORD.findall(text)
    if len(tokens) < words:
        return np.empty(0, dtype=np.uint32)
    index = {word: code for code, word in enumerate(dict.fromkeys(tokens))}  # distinct words, in C loops
    codes = np.fromiter(map(index.__getitem__, tokens), dtype=np.int64, count=len(tokens))
    table = np.fromiter((int.from_bytes(hashlib.sha1(t.encode("utf-8")).digest()[:8], "little") for t in index),
                        dtype=np.uint64, count=len(index))
    per_token = table[codes]
    count = len(tokens) - words + 1
    combined = np.zeros(count, dtype=np.uint64)
    for position, multiplier in enumerate(_POSITION_MULTIPLIERS[:words]):
        combined += per_token[position:position + count] * multiplier  # wraps mod 2**64, as meant
    return np.unique((combined >> np.uint64(32)).astype(np.uint32))


def minhash_of(text: str) -> MinHash | None:
    """The text's MinHash over its shingles; None when it has fewer than ``SHINGLE_WORDS`` words."""
    hashes = shingle_hashes(text)
    if not len(hashes):
        return None
    signature = _datasketch().MinHash(num_perm=NUM_PERM, seed=SEED, hashfunc=int, permutations=_permutations(),
                                      scheme=_SCHEME)
    for start in range(0, len(hashes), BATCH):  # datasketch makes a (batch x NUM_PERM) array: bounded here
        signature.update_batch(hashes[start:start + BATCH].tolist())
    return signature


@dataclass
class ExtensionCounts:
    """One extension's rows for the card: seen, exact duplicates left out, near duplicates (kept or dropped)."""

    rows: int = 0
    exact_duplicates: int = 0
    near_duplicates: int = 0

    def rates(self) -> dict[str, float]:
        """The duplicates as fractions of the rows seen."""
        return {"exact_duplicate_rate": self.exact_duplicates / self.rows if self.rows else 0.0,
                "near_duplicate_rate": self.near_duplicates / self.rows if self.rows else 0.0}


@dataclass
class DedupStats:
    """What deduplication found, per extension (``""``: a file without one) and in all, for the dataset card."""

    by_extension: dict[str, ExtensionCounts] = field(default_factory=dict)
    written: int = 0  # rows written (the rest: exact duplicates, and near duplicates when dropped)
    dropped_near: int = 0  # near duplicates left out (export.near_duplicates: drop)
    not_compared: int = 0  # rows of fewer than SHINGLE_WORDS words: exact check only

    def counts(self, extension: str) -> ExtensionCounts:
        return self.by_extension.setdefault(extension, ExtensionCounts())

    def total(self) -> ExtensionCounts:
        """The counts over every extension."""
        parts = self.by_extension.values()
        return ExtensionCounts(sum(c.rows for c in parts), sum(c.exact_duplicates for c in parts),
                               sum(c.near_duplicates for c in parts))

    def as_dict(self) -> dict[str, object]:
        """Plain values for the card (JSON or YAML), extensions sorted."""
        def entry(c: ExtensionCounts) -> dict[str, object]:
            return {"rows": c.rows, "exact_duplicates": c.exact_duplicates, "near_duplicates": c.near_duplicates,
                    **c.rates()}
        return {"rows": self.total().rows, "written": self.written, "dropped_near_duplicates": self.dropped_near,
                "not_compared": self.not_compared, "total": entry(self.total()),
                "by_extension": {ext: entry(c) for ext, c in sorted(self.by_extension.items())}}


@dataclass(frozen=True)
class Verdict:
    """What becomes of one row: written or not, why not, and the ``near_dup_cluster`` it is written with."""

    write: bool
    near_dup_cluster: str | None  # None only for a row not written
    duplicate: Reason | None = None  # "exact": an earlier row has its bytes; "near": an earlier row is within 0.85


class _ClusterIndex:
    """The first rows of the near-duplicate clusters: datasketch's LSH over their MinHash, their signatures
    (one bytearray, 512 bytes a row, for the check of LSH's candidates) and their ids."""

    def __init__(self) -> None:
        self.lsh = _datasketch().MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
        self.signatures = bytearray()
        self.ids: list[str] = []
        self.width = 0  # bytes of one signature, known at the first insert
        self._dtype = np.dtype(np.uint32)  # datasketch 2's affine32 values; set from the first insert

    def __len__(self) -> int:
        return len(self.ids)

    def signature(self, index: int) -> np.ndarray:
        start = index * self.width
        return np.frombuffer(self.signatures, dtype=self._dtype, count=NUM_PERM, offset=start)

    def first_match(self, minhash: MinHash) -> str | None:
        """The id of the earliest cluster whose first row's estimated Jaccard with ``minhash`` is >= 0.85."""
        if not self.ids:
            return None
        values = minhash.hashvalues
        for index in sorted(self.lsh.query(minhash)):
            if np.count_nonzero(self.signature(index) == values) / NUM_PERM >= THRESHOLD:
                return self.ids[index]
        return None

    def add(self, cluster: str, minhash: MinHash) -> None:
        values = np.ascontiguousarray(minhash.hashvalues)
        self._dtype = values.dtype
        self.width = values.nbytes
        self.lsh.insert(len(self.ids), minhash, check_duplication=False)
        self.signatures += values.tobytes()
        self.ids.append(cluster)


class Deduplicator:
    """Streaming deduplication: :meth:`see` each row, in record-id order, before writing it.

    ``near_duplicates`` is ``export.near_duplicates``: ``keep`` writes near duplicates with their cluster,
    ``drop`` leaves them out. Rows out of record-id order are refused (ValueError): "the first by record id" is
    what keeps a cluster's id stable, and a caller that broke the order would silently break that.
    """

    def __init__(self, near_duplicates: str = "keep") -> None:
        if near_duplicates not in NEAR_DUPLICATE_CHOICES:
            raise ValueError(f"near_duplicates must be one of {', '.join(NEAR_DUPLICATE_CHOICES)}, "
                             f"got {near_duplicates!r}")
        self.drop_near = near_duplicates == "drop"
        self.stats = DedupStats()
        self._digests: set[bytes] = set()
        self._clusters = _ClusterIndex()
        self._last_record = -1

    @property
    def cluster_count(self) -> int:
        """Clusters started so far (rows in the near-duplicate index)."""
        return len(self._clusters)

    def see(self, record_id: int | str, path: str, extension: str, sha256: bytes | str, text: str) -> Verdict:
        """The verdict on one row: ``sha256`` of its published bytes (32 bytes, or 64 hex digits), ``text`` its
        published (masked) text."""
        self._check_order(record_id)
        digest = _digest(sha256)
        counts = self.stats.counts(extension)
        counts.rows += 1
        if digest in self._digests:
            counts.exact_duplicates += 1
            return Verdict(False, None, "exact")
        self._digests.add(digest)
        own = row_id(record_id, path)
        cluster = self._near_cluster(own, text)
        if cluster == own:
            self.stats.written += 1
            return Verdict(True, own)
        counts.near_duplicates += 1
        if self.drop_near:
            self.stats.dropped_near += 1
            return Verdict(False, None, "near")
        self.stats.written += 1
        return Verdict(True, cluster, "near")

    def _near_cluster(self, own: str, text: str) -> str:
        """The cluster the row joins, or ``own`` when it starts one (and so enters the index)."""
        minhash = minhash_of(text)
        if minhash is None:
            self.stats.not_compared += 1
            return own
        match = self._clusters.first_match(minhash)
        if match is not None:
            return match
        self._clusters.add(own, minhash)
        return own

    def _check_order(self, record_id: int | str) -> None:
        number = int(record_id)
        if number < self._last_record:
            raise ValueError(f"rows must come in record-id order: record {number} after {self._last_record}")
        self._last_record = number


def _digest(sha256: bytes | str) -> bytes:
    """The 32 bytes of a SHA-256 given as bytes or as hex; anything else is refused."""
    digest = bytes.fromhex(sha256) if isinstance(sha256, str) else bytes(sha256)
    if len(digest) != DIGEST_BYTES:
        raise ValueError(f"a sha256 is {DIGEST_BYTES} bytes, got {len(digest)}")
    return digest

