"""export: a run directory (or its image) as Parquet shards per split, read back with pyarrow.

The end-to-end test with the users' readers (datasets, DuckDB) is tests/dataset/test_export_readers.py; these
tests build a small run with process_sources and check the export's own rules: schema, row groups, shards, the
license filter, near duplicates dropped, what it refuses and what it never touches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import sysconfig
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from helpers import assert_one_line_error, run_cli, visible

from zenodo_hpc.core.config import ExportConfig, SplitsConfig, config_from_dict
from zenodo_hpc.core.errors import UserError
from zenodo_hpc.core.state import append_records, mark_done, open_run
from zenodo_hpc.dataset import export as export_module
from zenodo_hpc.dataset.export import (
    COLUMNS,
    export_dataset,
    images_column,
    parquet_schema,
    record_fields,
)
from zenodo_hpc.dataset.load import load_images
from zenodo_hpc.record.process import process_sources
from zenodo_hpc.record.store import write_record

pq = pytest.importorskip("pyarrow.parquet", reason="the export writes Parquet with pyarrow: pip install pyarrow")
pytest.importorskip("datasketch", reason="the export needs the export extra: pip install 'datasketch>=2.0,<3'")

STDLIB = Path(sysconfig.get_paths()["stdlib"])
ALL_TRAIN = ExportConfig(splits=SplitsConfig(train=1.0, validation=0.0, test=0.0))
# record -> (license, files): 6's wrap.py is 5's with one line changed (a near duplicate); 8 is not done
RECORDS: dict[str, tuple[str | None, dict[str, bytes]]] = {
    "5": ("mit", {"wrap.py": (STDLIB / "textwrap.py").read_bytes(), "small.py": b"print(5)\n"}),
    "6": ("gpl-3.0-only", {"wrap.py": (STDLIB / "textwrap.py").read_bytes().replace(b"import re", b"import re  # 6"),
                           "own.py": (STDLIB / "fnmatch.py").read_bytes()}),
    "7": (None, {"glob.py": (STDLIB / "glob.py").read_bytes()}),
    "8": ("mit", {"never.py": b"print('not done')\n"}),
}


def _hit(record_id: str, license_id: str | None) -> dict[str, Any]:
    hit: dict[str, Any] = {"id": int(record_id), "conceptrecid": str(int(record_id) * 10),
                           "doi": f"10.5281/zenodo.{record_id}", "conceptdoi": f"10.5281/zenodo.{int(record_id) * 10}",
                           "metadata": {"title": f"demo {record_id}", "version": "v1"}}
    if license_id:
        hit["metadata"]["license"] = {"id": license_id}
    return hit


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Records 5, 6, 7 done; 8 processed but not done (never exported)."""
    tmp = tmp_path_factory.mktemp("export")
    cfg = config_from_dict({"run": {"scratch": str(tmp), "name": "r"}})
    run = open_run(cfg)
    for record_id, (license_id, files) in RECORDS.items():
        folder = tmp / "sources" / record_id / f"demo-{record_id}"
        for name, data in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
        process_sources(record_id, [(folder, "")], run.data, cfg, hit=_hit(record_id, license_id),
                        source_info={"kind": "local"})
        if record_id != "8":
            mark_done(run, record_id, {})
    append_records(run.records, [_hit(r, lic) for r, (lic, _) in RECORDS.items()])
    return run


def _table(out: Path) -> Any:
    return pq.read_table(sorted((out / "data").glob("*.parquet")), schema=parquet_schema(80, 80))


def test_rows_follow_the_schema_and_equal_the_h5(small_run, tmp_path: Path) -> None:
    result = export_dataset(small_run.root, tmp_path / "out", settings=ALL_TRAIN, progress=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["README.md", "data"]
    assert visible(tmp_path / "out" / "data") == ["train-00000-of-00001.parquet"]
    assert pq.read_schema(tmp_path / "out" / "data" / "train-00000-of-00001.parquet") == parquet_schema(80, 80)
    rows = _table(tmp_path / "out").to_pylist()
    assert [r["record_id"] for r in rows] == ["5", "5", "6", "6", "7"]  # record order, then the h5's path order
    assert result.rows == {"train": 5} and result.records == {"train": 3}
    for row in rows:
        array = load_images(small_run.record_folder(row["record_id"]))[row["path"]]
        assert np.array_equal(np.asarray(row["images"], dtype=np.uint32).reshape(-1, 80, 80), array)
        assert row["n_images"] == array.shape[0] == len(row["images"])
        assert row["sha256"] == hashlib.sha256(row["content"].encode()).hexdigest()
    assert {r["record_id"]: (r["license"], r["license_category"]) for r in rows} == {
        "5": ("mit", "permissive"), "6": ("gpl-3.0-only", "copyleft"), "7": (None, "none")}
    six = next(r for r in rows if r["path"] == "demo-6/wrap.py")
    assert six["near_dup_cluster"] == "5/demo-5/wrap.py"  # 6's wrap.py is within 0.85 of 5's


def test_row_groups_stay_small_and_shards_rotate(small_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_module, "ROW_GROUP_ROWS", 2)
    monkeypatch.setattr(export_module, "SHARD_BYTES", 1)  # every row group starts a new shard
    export_dataset(small_run.root, tmp_path / "out", settings=ALL_TRAIN, progress=False)
    shards = visible(tmp_path / "out" / "data")
    assert shards == [f"train-{i:05d}-of-00003.parquet" for i in range(3)]
    groups = [pq.ParquetFile(tmp_path / "out" / "data" / s).metadata for s in shards]
    assert [m.num_rows for m in groups] == [2, 2, 1] and all(m.num_row_groups == 1 for m in groups)
    assert groups[0].row_group(0).column(0).compression == "ZSTD"
    assert "data/train-00002-of-00003.parquet" in (tmp_path / "out" / "README.md").read_text()


def test_splits_by_concept_and_empty_splits_have_no_shard(small_run, tmp_path: Path) -> None:
    from zenodo_hpc.dataset.splits import split_of

    fractions = SplitsConfig(train=0.4, validation=0.3, test=0.3)
    result = export_dataset(small_run.root, tmp_path / "out", settings=ExportConfig(splits=fractions), progress=False)
    want = {split_of(f"{r}0", fractions) for r in ("5", "6", "7")}
    assert set(result.shards) == want
    assert {name.split("-")[0] for name in visible(tmp_path / "out" / "data")} == want
    for row in _table(tmp_path / "out").to_pylist():
        assert split_of(row["concept_id"], fractions) in result.shards


def test_license_categories_leave_records_out_and_count_them(small_run, tmp_path: Path) -> None:
    settings = dataclasses.replace(ALL_TRAIN, license_categories=["permissive"])
    result = export_dataset(small_run.root, tmp_path / "out", settings=settings, progress=False)
    assert {r["record_id"] for r in _table(tmp_path / "out").to_pylist()} == {"5"}
    assert result.facts.license_left_out == {"gpl-3.0-only": 1, "none": 1}
    assert result.facts.records_per_license == {"mit": 1}
    with pytest.raises(UserError, match="category not exported"):
        export_dataset(small_run.root, tmp_path / "none", progress=False,
                       settings=dataclasses.replace(ALL_TRAIN, license_categories=["other"]))
    assert not (tmp_path / "none").exists()


def test_near_duplicates_dropped_when_asked(small_run, tmp_path: Path) -> None:
    settings = dataclasses.replace(ALL_TRAIN, near_duplicates="drop")
    result = export_dataset(small_run.root, tmp_path / "out", settings=settings, progress=False)
    paths = [r["path"] for r in _table(tmp_path / "out").to_pylist()]
    assert "demo-6/wrap.py" not in paths and "demo-5/wrap.py" in paths and "demo-6/own.py" in paths
    assert result.facts.dedup["dropped_near_duplicates"] == 1


def test_the_cli_exports_and_reads_its_flags(small_run, tmp_path: Path) -> None:
    code, out, err = run_cli("export", str(small_run.root), "--out", str(tmp_path / "out"),
                             "--license-categories", "permissive,none", "--near-duplicates", "drop")
    assert code == 0, err
    assert out.splitlines()[-1] == str(tmp_path / "out")
    assert "left out for their license" in out and "gpl-3.0-only 1" in out
    assert {r["record_id"] for r in _table(tmp_path / "out").to_pylist()} == {"5", "7"}
    assert_one_line_error(*run_cli("export", str(small_run.root), "--out", str(tmp_path / "x"),
                                   "--license-categories", "free")[::2], "unknown license category free")
    assert_one_line_error(*run_cli("export", str(tmp_path / "missing"), "--out", str(tmp_path / "x"))[::2],
                          "does not exist")
    assert not (tmp_path / "x").exists()


def test_a_foreign_folder_is_refused_and_left_whole(small_run, tmp_path: Path) -> None:
    out = tmp_path / "home"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(UserError, match="not an earlier export"):
        export_dataset(small_run.root, out, progress=False)
    assert (out / "thesis.tex").read_text() == "years of work" and visible(out) == ["thesis.tex"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_an_earlier_export_is_replaced_without_stale_shards(small_run, tmp_path: Path) -> None:
    out = tmp_path / "out"
    export_dataset(small_run.root, out, settings=ALL_TRAIN, progress=False)
    (out / "data" / "test-00000-of-00001.parquet").write_bytes(b"stale")
    export_dataset(small_run.root, out, settings=ALL_TRAIN, progress=False)
    assert visible(out / "data") == ["train-00000-of-00001.parquet"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_records_without_text_are_named_and_nothing_is_written(small_run, tmp_path: Path) -> None:
    copy = tmp_path / "r"
    shutil.copytree(small_run.root, copy)
    images = load_images(copy / "data" / "7")
    shutil.rmtree(copy / "data" / "7")
    write_record(copy / "data", "7", images, {"hit": _hit("7", None)})  # format 2: images only, as before
    with pytest.raises(UserError, match=r"1 record hold no text .*: 7; process them again"):
        export_dataset(copy, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and visible(tmp_path) == ["r"]


def test_a_damaged_text_stops_the_export(small_run, tmp_path: Path) -> None:
    copy = tmp_path / "r"
    shutil.copytree(small_run.root, copy)
    with h5py.File(copy / "data" / "5" / "images_5.h5", "r+") as h5:
        digests = h5["files/sha256"][()]
        digests[0, 0] ^= 0xFF
        h5["files/sha256"][...] = digests
    with pytest.raises(UserError, match="does not match its sha256"):
        export_dataset(copy, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(shutil.which("mksquashfs") is None,
                    reason="mksquashfs not on PATH (apt-get install squashfs-tools)")
def test_the_packed_image_exports_the_same_rows(small_run, tmp_path: Path) -> None:
    from zenodo_hpc.core.state import load_run
    from zenodo_hpc.dataset.pack import pack

    copy = tmp_path / "r"
    shutil.copytree(small_run.root, copy)
    run, cfg = load_run(copy)
    image = pack(run, cfg, progress=False, allow_partial=True).image  # 8 is pending: left out
    export_dataset(copy, tmp_path / "from-run", settings=ALL_TRAIN, progress=False)
    result = export_dataset(image, tmp_path / "from-image", settings=ALL_TRAIN, progress=False)
    assert _table(tmp_path / "from-image").equals(_table(tmp_path / "from-run"))
    assert result.facts.source == f"image {image.name}"


@pytest.mark.parametrize(("hit", "want"), [
    ({"conceptrecid": "../../etc", "doi": ["not", "a", "doi"], "metadata": {"title": "x" * 5000}},
     {"concept_id": None, "doi": None, "title": None}),
    ({"conceptrecid": 42, "conceptdoi": "10.5281/zenodo.42", "metadata": {"version": 3, "title": " "}},
     {"concept_id": "42", "concept_doi": "10.5281/zenodo.42", "version": "3", "title": None}),
    ("not a dict", {"concept_id": None, "license": None, "license_category": "none"}),
])
def test_record_fields_take_only_what_is_valid(hit: Any, want: dict[str, Any]) -> None:
    fields = record_fields("9", {"hit": hit})
    assert fields["record_id"] == "9"
    assert {key: fields[key] for key in want} == want


def test_images_column_is_the_arrays_and_refuses_another_shape() -> None:
    arrays = [np.arange(2 * 80 * 80, dtype=np.uint32).reshape(2, 80, 80), np.zeros((0, 80, 80), np.uint8),
              np.full((1, 80, 80), 0x1F600, np.uint32)]
    column = images_column(arrays, 80, 80)
    assert [np.asarray(v, dtype=np.uint32).reshape(-1, 80, 80).tolist() for v in column.to_pylist()] == \
        [a.astype(np.uint32).tolist() for a in arrays]
    with pytest.raises(UserError, match=r"shape \(1, 80, 40\)"):
        images_column([np.zeros((1, 80, 40), np.uint32)], 80, 80)
    assert list(COLUMNS).index("images") == 13


def test_a_record_folder_not_named_by_a_record_id_is_refused(small_run, tmp_path: Path) -> None:
    """Rows are deduplicated in record-id order: a record made by `process --id name` has no place in it."""
    from zenodo_hpc.core.state import RunDir

    copy = tmp_path / "r"
    shutil.copytree(small_run.root, copy)
    shutil.copytree(copy / "data" / "7", copy / "data" / "mytool")
    mark_done(RunDir(copy), "mytool", {})
    with pytest.raises(UserError, match="'mytool' is not named by a Zenodo record id"):
        export_dataset(copy, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
