"""zenodo_hpc.dataset.dedup: exact and near-duplicate rows of the Parquet export, on real text (this Python's
standard library): copies, copies with a few lines changed, unrelated modules, a one-character change."""

from __future__ import annotations

import hashlib
import math
import shlex
import sys
import sysconfig
import tracemalloc
from pathlib import Path

import pytest
from datasketch import MinHash

from zenodo_hpc.core.errors import UserError
from zenodo_hpc.dataset.dedup import (
    BATCH,
    DATASKETCH_REQUIREMENT,
    EXACT_BYTES_PER_ROW,
    INDEX_BYTES_PER_ROW,
    NUM_PERM,
    SEED,
    SHINGLE_WORDS,
    THRESHOLD,
    Deduplicator,
    Verdict,
    jaccard,
    minhash_of,
    row_id,
    shingle_hashes,
    shingles,
)

STDLIB = Path(sysconfig.get_paths()["stdlib"])
MODULES = ("json/decoder.py", "json/encoder.py", "csv.py", "textwrap.py", "shlex.py", "fnmatch.py", "glob.py",
           "bisect.py", "heapq.py", "random.py", "string.py", "calendar.py", "gzip.py", "zipfile.py", "tarfile.py",
           "difflib.py", "pprint.py", "argparse.py", "logging/__init__.py", "email/utils.py", "http/client.py",
           "urllib/parse.py", "configparser.py", "ftplib.py", "smtplib.py", "tempfile.py", "shutil.py", "ast.py",
           "dataclasses.py", "enum.py", "functools.py", "inspect.py", "statistics.py", "fractions.py", "colorsys.py",
           "queue.py", "sched.py", "selectors.py", "socketserver.py", "uuid.py")


def source(name: str) -> str:
    path = STDLIB / name
    if not path.exists():
        pytest.skip(f"this Python's standard library has no {name} (at {STDLIB})")
    return path.read_text(encoding="utf-8")


def sha(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def see(dedup: Deduplicator, record: int, path: str, text: str, ext: str = "py") -> Verdict:
    return dedup.see(record, path, ext, sha(text), text)


def change_lines(text: str, every: int, word: str = "zenodo_changed") -> str:
    """The text with one word appended to every ``every``-th line (a few lines changed)."""
    lines = text.splitlines(keepends=True)
    return "".join(line.rstrip("\n") + f"  # {word}\n" if i % every == every // 2 else line
                   for i, line in enumerate(lines))


# --- exact -------------------------------------------------------------------------------------------------


def test_the_same_bytes_are_one_row_the_first_by_record_id() -> None:
    dedup = Deduplicator()
    text = source("csv.py")
    first = see(dedup, 100, "a/csv.py", text)
    again = see(dedup, 101, "b/csv.py", text)
    other = see(dedup, 101, "b/glob.py", source("glob.py"))
    assert (first.write, first.near_dup_cluster, first.duplicate) == (True, row_id(100, "a/csv.py"), None)
    assert (again.write, again.duplicate) == (False, "exact")
    assert other.write and other.near_dup_cluster == "101/b/glob.py"
    counts = dedup.stats.by_extension["py"]
    assert (counts.rows, counts.exact_duplicates, counts.near_duplicates) == (3, 1, 0)
    assert dedup.stats.written == 2


def test_a_sha256_as_hex_is_the_same_digest_and_a_wrong_length_is_refused() -> None:
    dedup = Deduplicator()
    text = source("glob.py")
    assert dedup.see(1, "glob.py", "py", sha(text).hex(), text).write
    assert dedup.see(2, "glob.py", "py", sha(text), text).duplicate == "exact"
    with pytest.raises(ValueError, match="32 bytes"):
        dedup.see(3, "x.py", "py", sha(text)[:16], text)


def test_rows_out_of_record_id_order_are_refused() -> None:
    """The first by record id is what names a cluster: a caller out of order would rename clusters silently."""
    dedup = Deduplicator()
    see(dedup, 10, "a.py", source("glob.py"))
    see(dedup, 10, "b.py", source("csv.py"))  # the same record: any order of its files
    with pytest.raises(ValueError, match="record-id order: record 9 after 10"):
        see(dedup, 9, "c.py", source("heapq.py"))


# --- near ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["textwrap.py", "configparser.py", "difflib.py"])
def test_a_copy_with_a_few_lines_changed_joins_the_first_rows_cluster(name: str) -> None:
    text = source(name)
    edited = change_lines(text, every=60)
    assert edited != text
    measured = jaccard(shingles(text), shingles(edited))
    assert THRESHOLD <= measured < 1.0, measured  # the real similarity: a near duplicate by definition
    dedup = Deduplicator()
    first = see(dedup, 5, "pkg/" + name, text)
    copy = see(dedup, 7, "fork/" + name, edited)
    assert first.near_dup_cluster == f"5/pkg/{name}"
    assert (copy.write, copy.near_dup_cluster, copy.duplicate) == (True, f"5/pkg/{name}", "near")
    assert dedup.stats.by_extension["py"].near_duplicates == 1
    assert dedup.cluster_count == 1  # the near duplicate is not indexed: clusters are stars around their first row


def test_heavily_changed_copies_are_not_near_duplicates() -> None:
    text = source("configparser.py")
    edited = change_lines(text, every=3)
    assert jaccard(shingles(text), shingles(edited)) < 0.6
    dedup = Deduplicator()
    see(dedup, 1, "a.py", text)
    verdict = see(dedup, 2, "b.py", edited)
    assert verdict.duplicate is None and verdict.near_dup_cluster == "2/b.py"


def test_unrelated_modules_each_start_their_own_cluster() -> None:
    texts = {name: source(name) for name in MODULES}
    dedup = Deduplicator()
    verdicts = {name: see(dedup, i, name, text) for i, (name, text) in enumerate(texts.items())}
    assert all(v.write and v.near_dup_cluster == f"{i}/{name}" for i, (name, v) in enumerate(verdicts.items()))
    assert dedup.cluster_count == len(MODULES)
    sets = [shingles(t) for t in texts.values()]
    assert max(jaccard(a, b) for i, a in enumerate(sets) for b in sets[i + 1:]) < 0.3  # truly unrelated


def test_drop_leaves_near_duplicates_out_and_counts_them() -> None:
    text = source("textwrap.py")
    dedup = Deduplicator("drop")
    assert see(dedup, 1, "textwrap.py", text).write
    dropped = see(dedup, 2, "textwrap.py", change_lines(text, every=60))
    assert (dropped.write, dropped.near_dup_cluster, dropped.duplicate) == (False, None, "near")
    assert (dedup.stats.dropped_near, dedup.stats.written) == (1, 1)
    with pytest.raises(ValueError, match="keep, drop"):
        Deduplicator("remove")


def test_one_character_in_a_20_line_file() -> None:
    """A changed character inside a word that occurs once changes the 5 shingles holding it: with n shingles,
    J = (n - 5) / (n + 5), which is >= 0.85 only from n = 62 shingles (66 words). A 20-line source file has
    about that many, so one edit is on the edge: here measured, and the verdict follows the measure."""
    lines = source("textwrap.py").splitlines(keepends=True)
    head = "".join(lines[:20])
    words = head.split()
    target = next(w for w in words[len(words) // 2:] if w.isidentifier() and len(w) > 3 and words.count(w) == 1
                  and head.count(w) == 1)
    edited = head.replace(target, target[:-1] + ("x" if target[-1] != "x" else "y"))
    n = len(shingles(head))
    measured = jaccard(shingles(head), shingles(edited))
    assert measured == pytest.approx((n - SHINGLE_WORDS) / (n + SHINGLE_WORDS))
    assert n >= 62 and measured >= THRESHOLD  # textwrap.py's first 20 lines: 88 shingles, J = 83/93 = 0.89
    a, b = minhash_of(head), minhash_of(edited)
    assert a is not None and b is not None
    standard_error = math.sqrt(measured * (1 - measured) / NUM_PERM)  # of MinHash's estimate, ~0.027 here
    assert abs(a.jaccard(b) - measured) <= 4 * standard_error
    dedup = Deduplicator()
    see(dedup, 1, "head.py", head)
    assert see(dedup, 2, "head.py", edited).duplicate == "near"
    # and a short file: 8 lines have too few shingles for one edit to stay within 0.85
    short = "".join(lines[:8])
    short_words = short.split()
    word = next(w for w in short_words[len(short_words) // 2:] if w.isidentifier() and short.count(w) == 1)
    short_edit = short.replace(word, word + "z")
    m = len(shingles(short))
    assert m < 62 and jaccard(shingles(short), shingles(short_edit)) < THRESHOLD
    dedup = Deduplicator()
    see(dedup, 1, "short.py", short)
    assert see(dedup, 2, "short.py", short_edit).duplicate is None


def test_a_text_of_fewer_than_five_words_is_only_checked_exactly() -> None:
    dedup = Deduplicator()
    assert minhash_of("import os, sys") is None
    assert see(dedup, 1, "a.py", "import os, sys\n").near_dup_cluster == "1/a.py"
    assert see(dedup, 2, "b.py", "import os, sys\n\n").near_dup_cluster == "2/b.py"  # other bytes, same words
    assert see(dedup, 3, "c.py", "import os, sys\n").duplicate == "exact"
    assert dedup.stats.not_compared == 2


def test_shingle_hashes_are_one_per_distinct_shingle() -> None:
    """The fast hashes stand for the shingles of the definition: as many, and the same for the same shingles."""
    for name in MODULES[:10]:
        text = source(name)
        assert len(shingle_hashes(text)) == len(shingles(text))
    assert set(shingle_hashes("a b c d e f").tolist()) < set(shingle_hashes("a b c d e f g").tolist())
    assert set(shingle_hashes("a b c d e").tolist()) != set(shingle_hashes("b a c d e").tolist())  # order counts


def test_a_rerun_gives_the_same_clusters_and_later_records_do_not_rename_them() -> None:
    large = ("textwrap.py", "configparser.py", "difflib.py", "argparse.py", "tarfile.py", "zipfile.py", "inspect.py")
    rows = [(i, f"m{i % 7}.py", change_lines(source(large[i % 7]), every=80 + i)) for i in range(21)]

    def run(extra: int = 0) -> list[tuple[bool, str | None]]:
        dedup = Deduplicator()
        out = [(v.write, v.near_dup_cluster) for v in (see(dedup, r, p, t) for r, p, t in rows)]
        for j in range(extra):
            see(dedup, 100 + j, "late.py", source(MODULES[j]))
        return out

    first = run()
    assert first == run(extra=3)
    assert {c for _, c in first} == {f"{i}/m{i}.py" for i in range(7)}


def test_the_stats_give_rates_per_extension_for_the_card() -> None:
    dedup = Deduplicator()
    text = source("textwrap.py")
    see(dedup, 1, "a.py", text)
    see(dedup, 2, "a.py", text)
    see(dedup, 3, "a.py", change_lines(text, every=60))
    see(dedup, 3, "b.py", source("csv.py"))
    see(dedup, 4, "r.txt", "plain words in a readme file here", ext="txt")
    card = dedup.stats.as_dict()
    assert card["by_extension"] == {
        "py": {"rows": 4, "exact_duplicates": 1, "near_duplicates": 1, "exact_duplicate_rate": 0.25,
               "near_duplicate_rate": 0.25},
        "txt": {"rows": 1, "exact_duplicates": 0, "near_duplicates": 0, "exact_duplicate_rate": 0.0,
                "near_duplicate_rate": 0.0}}
    assert (card["rows"], card["written"]) == (5, 4)


def test_memory_per_row_stays_within_the_stated_bound() -> None:
    """tracemalloc's count of what the deduplicator keeps after the standard library's top-level modules."""
    files = sorted(STDLIB.glob("*.py"))
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in files]
    dedup = Deduplicator()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i, (path, text) in enumerate(zip(files, texts, strict=True)):
            see(dedup, i, path.name, text)
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert dedup.cluster_count > 100, dedup.cluster_count
    assert kept / dedup.cluster_count <= INDEX_BYTES_PER_ROW + EXACT_BYTES_PER_ROW, kept / dedup.cluster_count


def test_a_file_past_one_batch_of_shingles_gets_the_signature_of_all_of_them() -> None:
    """The shingles go to datasketch in batches (to bound its temporary array): the minimum over the batches is
    the signature of the whole set, as one call would give."""
    text = source("argparse.py")
    hashes = shingle_hashes(text)
    assert len(hashes) > BATCH
    whole = MinHash(num_perm=NUM_PERM, seed=SEED, hashfunc=int)
    whole.update_batch(hashes.tolist())
    batched = minhash_of(text)
    assert batched is not None and (batched.hashvalues == whole.hashvalues).all()
    partial = MinHash(num_perm=NUM_PERM, seed=SEED, hashfunc=int)
    partial.update_batch(hashes[:BATCH].tolist())
    assert not (batched.hashvalues == partial.hashvalues).all()  # the later batches count


def test_without_the_export_extra_one_line_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulated: a None entry in sys.modules makes "import datasketch" raise ImportError.
    monkeypatch.setitem(sys.modules, "datasketch", None)
    with pytest.raises(UserError) as err:
        Deduplicator()
    assert "needs datasketch: python -m pip install 'datasketch>=2.0,<3'" in str(err.value)
    assert "\n" not in str(err.value)


def test_the_install_hint_pins_what_the_export_extra_pins() -> None:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11's: pyproject.toml is read with it")
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert shlex.split(DATASKETCH_REQUIREMENT)[0] in pyproject["project"]["optional-dependencies"]["export"]
