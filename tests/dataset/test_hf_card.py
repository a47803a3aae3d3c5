"""The Parquet export's dataset card (dataset/hf_card.py), read by the real readers: PyYAML for its front matter,
``huggingface_hub``'s DatasetCard, ``datasets`` on a folder of real shards (written with export.parquet_schema),
and each of its code blocks run from the folder with pandas, DuckDB and datasets."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from zenodo_hpc.core.licenses import vocabulary
from zenodo_hpc.dataset.export import COLUMNS, parquet_schema
from zenodo_hpc.dataset.hf_card import (
    COLUMN_TABLE,
    SIZE_CATEGORIES,
    TOP_EXTENSIONS,
    CardFacts,
    dataset_card,
    features,
    hub_id,
    hub_license,
    hub_license_ids,
    size_category,
)

H, W = 4, 5  # a small raster keeps the shards tiny; the features test checks 80x80 too


def dedup_stats(by_extension: dict[str, tuple[int, int, int]]) -> dict[str, object]:
    """DedupStats.as_dict()'s shape, made by the real DedupStats."""
    from zenodo_hpc.dataset.dedup import DedupStats, ExtensionCounts

    stats = DedupStats({ext: ExtensionCounts(*counts) for ext, counts in by_extension.items()})
    stats.written = stats.total().rows - stats.total().exact_duplicates
    stats.not_compared = 1
    return stats.as_dict()


def make_facts(**changes: Any) -> CardFacts:
    facts = CardFacts(
        pretty_name="Zenodo-ML", source="run directory zenodo-ml", height=H, width=W,
        split_fractions={"train": 0.9, "validation": 0.05, "test": 0.05},
        data_files={"train": ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"],
                    "test": ["data/test-00000-of-00001.parquet"]},
        rows={"train": 3, "test": 1}, records={"train": 2, "test": 1},
        records_per_license={"mit": 2, "gpl-3.0-or-later": 1}, rows_per_license={"mit": 3, "gpl-3.0-or-later": 1},
        records_per_category={"copyleft": 1, "permissive": 2}, license_categories=("permissive", "copyleft"),
        license_left_out={"cc-by-nc-4.0": 4, "none": 2},
        dedup=dedup_stats({"py": (6, 2, 1), "": (1, 0, 0)}), near_duplicates="keep",
        opted_out=3, withdrawn=5, masked=7, generated="zenodo-hpc 0.9.0")
    return replace(facts, **changes)


def front_matter(card: str) -> dict[str, Any]:
    assert card.startswith("---\n")
    meta, _, _ = card[4:].partition("\n---\n")
    loaded = yaml.safe_load(meta)
    assert isinstance(loaded, dict)
    return loaded


def section(card: str, title: str) -> str:
    """The text of one ``## title`` section."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", card, re.S | re.M)
    assert match, f"no section {title!r}"
    return match.group(1)


def table_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


def unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


# --- the front matter -----------------------------------------------------------------------------------------


def test_front_matter_declares_license_size_and_the_shards_of_each_split_with_rows():
    facts = make_facts(data_files={"train": ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"],
                                   "test": ["data/test-00000-of-00001.parquet"], "validation": []},
                       rows={"train": 600, "test": 500, "validation": 0})
    meta = front_matter(dataset_card(facts))
    assert list(meta)[:2] == ["pretty_name", "license"]  # sort_keys=False: the Hub's own order
    assert meta["pretty_name"] == "Zenodo-ML"
    assert meta["license"] == ["gpl-3.0", "mit"] and "license_name" not in meta
    assert meta["tags"] == ["code", "zenodo"]
    assert meta["task_categories"] == ["text-generation"]
    assert meta["size_categories"] == ["1K<n<10K"]  # 1,100 rows in all
    assert meta["configs"] == [{"config_name": "default", "data_files": [
        {"split": "train", "path": ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]},
        {"split": "test", "path": ["data/test-00000-of-00001.parquet"]}]}]  # validation: no rows, not declared
    assert meta["dataset_info"] == {"features": features(H, W)}


@pytest.mark.parametrize(("rows", "bucket"), [(0, "n<1K"), (999, "n<1K"), (1_000, "1K<n<10K"), (99_999, "10K<n<100K"),
                                              (100_000, "100K<n<1M"), (10**12 - 1, "100B<n<1T"), (10**12, "n>1T")])
def test_size_category_is_the_hubs_bucket_of_the_row_count(rows, bucket):
    assert size_category(rows) == bucket


def test_size_categories_are_the_hubs_own_names():
    datasets = pytest.importorskip("datasets", reason="datasets holds the Hub's size buckets: pip install datasets")
    text = resources.files(datasets).joinpath("utils/resources/size_categories.json").read_text(encoding="utf-8")
    assert [name for name, _ in SIZE_CATEGORIES] == [c for c in json.loads(text) if c != "unknown"]


@pytest.mark.parametrize(("height", "width"), [(80, 80), (H, W), (1, 7)])
def test_features_are_what_datasets_makes_of_the_shards_schema(height, width):
    datasets = pytest.importorskip("datasets", reason="the reference for the card's features: pip install datasets")
    expected = datasets.Features.from_arrow_schema(parquet_schema(height, width))._to_yaml_list()
    assert features(height, width) == expected
    assert front_matter(dataset_card(make_facts(height=height, width=width)))["dataset_info"]["features"] == expected


def test_column_table_has_one_line_per_export_column_in_order():
    assert [name for name, _, _ in COLUMN_TABLE] == list(COLUMNS)
    lines = table_lines(section(dataset_card(make_facts()), "Columns"))[2:]
    assert [line.split("|")[1].strip() for line in lines] == [f"`{c}`" for c in COLUMNS]
    images = next(line for line in lines if line.startswith("| `images`"))
    assert f"list of {H}x{W} uint32 arrays" in images


# --- the Hub's license fields ---------------------------------------------------------------------------------


def test_hub_license_list_is_the_hubs_page_parsed_without_its_comments():
    ids = hub_license_ids()
    assert len(ids) == 83  # the table of hub-docs' repositories-licenses.md at the cited commit
    assert {"mit", "apache-2.0", "gpl-3.0", "lgpl-2.1", "agpl-3.0", "cc-by-4.0", "odbl", "other"} <= ids
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", i) for i in ids), "a comment or table text was read as an id"


@pytest.mark.parametrize(("ids", "expected"), [
    (["mit", "apache-2.0", "mit"], ["apache-2.0", "mit"]),
    (["bsd-3-clause", "cc-by-4.0", "cc0-1.0"], ["bsd-3-clause", "cc-by-4.0", "cc0-1.0"]),
    # SPDX's GNU -only / -or-later: licensed under the version the Hub names
    (["gpl-3.0-or-later", "lgpl-2.1-only", "agpl-3.0-only", "gpl-2.0-or-later"],
     ["agpl-3.0", "gpl-2.0", "gpl-3.0", "lgpl-2.1"]),
    (["gpl-3.0", "cc-zero", "gpl-3.0+"], ["cc0-1.0", "gpl-3.0"]),  # legacy ids: exact, or as Zenodo maps them
    (["odbl-1.0", "odc-by-1.0", "gfdl-1.3-only"], ["gfdl", "odbl", "odc-by"]),  # the Hub's family ids
])
def test_hub_license_lists_the_hubs_ids_when_it_knows_every_license(ids, expected):
    assert hub_license(ids) == {"license": expected}


@pytest.mark.parametrize(("ids", "known"), [
    (["mit", "other-open"], ["mit"]),  # Zenodo's own id: no Hub name
    (["mit", "none"], ["mit"]),  # a record without a license
    (["gpl-1.0-or-later"], []),  # -or-later, but the Hub has no gpl-1.0: not guessed as the family
    (["apache-2.0-or-later"], []),  # not a GNU id: the suffix means nothing
    (["unknown"], []),  # a license without a readable id
    ([], []),
])
def test_hub_license_adds_other_with_a_name_and_details_when_some_license_has_no_hub_id(ids, known):
    fields = hub_license(ids)
    assert fields["license"] == sorted([*known, "other"])
    assert fields["license_name"] == "various"
    assert "`license` column" in str(fields["license_details"])


def test_every_zenodo_license_maps_to_an_id_on_the_hubs_list_or_to_other():
    mapped = {i: hub_id(i) for i in vocabulary()}
    assert {m for m in mapped.values() if m is not None} <= hub_license_ids()
    assert mapped["mit"] == "mit" and mapped["eupl-1.2"] == "eupl-1.2" and mapped["lgpl-3.0-or-later"] == "lgpl-3.0"
    assert mapped["cc-by-nc-sa-4.0"] == "cc-by-nc-sa-4.0" and mapped["notspecified"] is None


# --- what huggingface_hub and datasets make of it -------------------------------------------------------------


def write_shard(path: Path, rows: list[dict[str, Any]], height: int = H, width: int = W) -> None:
    pa = pytest.importorskip("pyarrow", reason="the shards are written with pyarrow: pip install pyarrow")
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=parquet_schema(height, width)), path, compression="zstd")


def row(record_id: str, path: str, license_id: str | None, n_images: int) -> dict[str, Any]:
    text = "x = 1\n"
    image = [[ord(c) for c in text[:W].ljust(W)]] + [[32] * W] * (H - 1)
    return {"record_id": record_id, "concept_id": f"c{record_id}", "doi": f"10.5281/zenodo.{record_id}",
            "concept_doi": None, "version": "1.0", "title": "a | title\nwith a line", "license": license_id,
            "license_category": "permissive" if license_id else "none", "path": path, "extension": "py",
            "size_bytes": len(text), "sha256": "0" * 64, "content": text, "images": [image] * n_images,
            "n_images": n_images, "near_dup_cluster": f"{record_id}/{path}"}


def export_folder(root: Path) -> tuple[Path, CardFacts]:
    """A folder as the export writes it: two train shards and a test shard, the card naming them; and a stray
    validation shard the card does not name (the configs, not the file names, say what the splits are)."""
    folder = root / "export"
    facts = make_facts(rows={"train": 3, "test": 1}, records_per_license={"mit": 2, "none": 1},
                       rows_per_license={"mit": 3, "none": 1})
    write_shard(folder / facts.data_files["train"][0], [row("11", "a.py", "mit", 2), row("11", "b.py", "mit", 1)])
    write_shard(folder / facts.data_files["train"][1], [row("12", "a.py", "mit", 1)])
    write_shard(folder / facts.data_files["test"][0], [row("13", "a.py", None, 1)])
    write_shard(folder / "data/validation-00000-of-00001.parquet", [row("99", "stray.py", "mit", 1)])
    (folder / "README.md").write_text(dataset_card(facts), encoding="utf-8")
    return folder, facts


@pytest.fixture
def hf_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """datasets' and the hub's caches under the test's folder, and no network."""
    env = {"HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_huggingface_hub_reads_the_card_and_its_license(tmp_path):
    hub = pytest.importorskip("huggingface_hub", reason="the Hub's own card parser: pip install huggingface_hub")
    path = tmp_path / "README.md"
    path.write_text(dataset_card(make_facts(records_per_license={"mit": 1, "none": 1})), encoding="utf-8")
    card = hub.DatasetCard.load(path)
    assert isinstance(card.data, hub.DatasetCardData)
    assert card.data.license == ["mit", "other"]
    assert card.data.pretty_name == "Zenodo-ML" and card.data.size_categories == ["n<1K"]
    data = card.data.to_dict()
    assert data["license_name"] == "various" and data["configs"][0]["config_name"] == "default"
    assert card.text.lstrip().startswith("# Zenodo-ML")


def test_datasets_loads_exactly_the_configured_splits_with_the_cards_features(tmp_path, hf_env):
    datasets = pytest.importorskip("datasets", reason="the readers' loader: pip install datasets")
    folder, facts = export_folder(tmp_path)
    builder = datasets.load_dataset_builder(str(folder))
    assert builder.info.features == datasets.Features.from_arrow_schema(parquet_schema(H, W))
    loaded = datasets.load_dataset(str(folder))
    assert set(loaded) == {"train", "test"}  # not the stray validation shard
    assert {split: loaded[split].num_rows for split in loaded} == facts.rows
    assert loaded["train"]["path"] == ["a.py", "b.py", "a.py"]  # both train shards, in the card's order
    np = pytest.importorskip("numpy")
    assert np.asarray(loaded["train"][0]["images"], dtype=np.uint32).shape == (2, H, W)
    # the check has teeth: without the card's configs, datasets takes every shard by its name
    (folder / "README.md").unlink()
    assert set(datasets.load_dataset(str(folder))) == {"train", "validation", "test"}


def python_blocks(card: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", card, re.S | re.M)


def test_every_code_block_of_the_card_runs_from_the_folder_and_prints_what_it_says(tmp_path, hf_env):
    for module in ("datasets", "pandas", "duckdb", "numpy"):
        pytest.importorskip(module, reason=f"the card's recipes use {module}: pip install {module}")
    folder, _ = export_folder(tmp_path)
    blocks = python_blocks((folder / "README.md").read_text(encoding="utf-8"))
    expected = [  # what each recipe prints, in the card's order
        [r"DatasetDict", r"train: Dataset", r"num_rows: 3", r"test: Dataset", r"num_rows: 1"],
        [rf"^\(2, {H}, {W}\)$"],  # the first train row has 2 images
        [r"none\s+1", r"permissive\s+4"],  # every shard under data/, the stray one too (pandas reads the folder)
        [r"mit\s*│\s*4", r"NULL\s*│\s*1"],
    ]
    assert len(blocks) == len(expected)
    env = {**os.environ, **hf_env, "PYTHONPATH": ""}
    for block, patterns in zip(blocks, expected, strict=True):
        assert "OWNER" not in block and "<" not in block, "a placeholder the reader must fill in"
        done = subprocess.run([sys.executable, "-c", block], cwd=folder, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"{block}\n{done.stderr}"
        for pattern in patterns:
            assert re.search(pattern, done.stdout, re.M), f"{block}\nprinted:\n{done.stdout}"


# --- the body's facts -----------------------------------------------------------------------------------------


def test_license_tables_escape_pipes_and_line_breaks_of_a_license_id():
    hostile = "evil|id\nnext | row"
    card = dataset_card(make_facts(records_per_license={hostile: 2, "mit": 1}, rows_per_license={hostile: 5},
                                   license_left_out={"x|y": 1}))
    licenses = section(card, "Licenses")
    lines = table_lines(licenses)
    evil = [line for line in lines if "evil" in line]
    assert len(evil) == 1 and evil[0].startswith("| evil\\|id next \\| row |")
    first_table = licenses.split("\n\n")[1].splitlines()
    assert first_table[0] == "| license | category | records | rows |"
    assert all(unescaped_pipes(line) == 5 for line in first_table)  # no cell split by the id's `|`
    assert not any(line.startswith("next") for line in licenses.splitlines())
    assert "| x\\|y | other | 1 |" in licenses
    assert front_matter(card)["license"] == ["mit", "other"]  # the odd id is not put in the YAML as a license


def test_licenses_section_counts_records_and_rows_per_license_category_and_what_was_left_out():
    licenses = section(dataset_card(make_facts()), "Licenses")
    assert "| mit | permissive | 2 | 3 |" in licenses
    assert "| gpl-3.0-or-later | copyleft | 1 | 1 |" in licenses
    assert "| permissive | 2 |" in licenses and "| copyleft | 1 |" in licenses
    assert "Categories exported: permissive, copyleft." in licenses
    assert "| cc-by-nc-4.0 | other | 4 |" in licenses and "| none | none | 2 |" in licenses
    assert "must honour the license of its file" in licenses
    nothing = section(dataset_card(make_facts(license_left_out={})), "Licenses")
    assert "No record was left out for its license." in nothing and "cc-by-nc-4.0" not in nothing


def test_dedup_table_shows_the_top_extensions_by_rows_then_the_total():
    by_extension = {f"e{i:02d}": (100 + i, i, 2 * i) for i in range(TOP_EXTENSIONS + 5)}
    by_extension["a|b"] = (1, 1, 0)
    by_extension[""] = (1_000, 10, 0)
    dedup = section(dataset_card(make_facts(dedup=dedup_stats(by_extension))), "Deduplication")
    lines = table_lines(dedup)[2:]
    assert len(lines) == TOP_EXTENSIONS + 1
    assert lines[0] == "| (none) | 1,000 | 10 | 1.0% | 0 | 0.0% |"  # most rows first; no extension named so
    assert lines[1].startswith("| .e24 | 124 | 24 | ")
    assert lines[-1].startswith("| all | 3,801 | 311 | ")  # every extension counted, shown or not
    assert not any("a\\|b" in line or "e04 " in line for line in lines)  # below the top 20
    assert "Jaccard similarity of 0.85" in dedup and "5-word shingles" in dedup
    assert "Near duplicates are kept" in dedup and "`near_dup_cluster`" in dedup


def test_dedup_text_says_near_duplicates_were_dropped_and_how_many():
    stats = dedup_stats({"py": (10, 0, 3)})
    stats["dropped_near_duplicates"] = 3
    dedup = section(dataset_card(make_facts(dedup=stats, near_duplicates="drop")), "Deduplication")
    assert "Near duplicates were dropped" in dedup and "(3 rows left out)" in dedup
    assert "| .py | 10 | 0 | 0.0% | 3 | 30.0% |" in dedup


def test_splits_credentials_and_opt_out_give_this_releases_counts():
    card = dataset_card(make_facts())
    assert "| train | 90.0% | 2 | 3 | 2 |" in section(card, "Splits")
    assert "| validation | 5.0% | 0 | 0 | 0 |" in section(card, "Splits")
    credentials = section(card, "Credentials")
    assert "7 were masked" in credentials and "`*`" in credentials
    opt_out = section(card, "Opting out")
    assert "Community tab" in opt_out and "`dataset.exclude`" in opt_out and "concept DOI" in opt_out
    assert "request: 3 records" in opt_out and "left out: 5 records" in opt_out
    image = section(dataset_card(make_facts(source="image zenodo-ml-2026.12.sqsh", opted_out=0)), "Opting out")
    assert "already lacks them" in image
    assert card.rstrip().endswith("Generated by zenodo-hpc 0.9.0.")
