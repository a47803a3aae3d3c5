"""The Parquet export end to end, read by the readers its users have (issue 22's "Done when").

One run of the whole pipeline (`zenodo-hpc run` against the Zenodo double: harvest, the workers, pack) over
records with several licenses, two versions of one concept, a file shared byte for byte between records, a
near-duplicate file, planted credentials and an opted-out concept; then `organize` (the Kaggle PNGs) and
`export` of the run. The export is loaded by `datasets.load_dataset` and DuckDB in a separate Python that never
imports zenodo_hpc (as its users load it), and every published artifact is searched for the credentials.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from helpers import FAKE_CREDENTIALS, image_rows, leaked, plant_credentials, run_config

from zenodo_hpc.cli import main
from zenodo_hpc.dataset.image import SquashImage
from zenodo_hpc.dataset.load import load_files, load_images

pytest.importorskip("datasets", reason="the export is loaded with datasets: pip install 'datasets>=5,<6'")
pytest.importorskip("duckdb", reason="the export is read with DuckDB: pip install duckdb")
pytest.importorskip("datasketch", reason="the export needs the export extra: pip install 'datasketch>=2.0,<3'")
Image = pytest.importorskip("PIL.Image", reason="Pillow decodes the Kaggle PNGs: pip install pillow")
pytestmark = pytest.mark.skipif(shutil.which("mksquashfs") is None,
                                reason="mksquashfs not on PATH (apt-get install squashfs-tools)")

STDLIB = Path(sysconfig.get_paths()["stdlib"])
SPLITS = {"train": 0.5, "validation": 0.25, "test": 0.25}
# concept -> its split under SPLITS (tests/dataset/test_splits.py checks split_of itself): all three are used
CONCEPT_SPLIT = {"300": "train", "310": "test", "320": "validation", "330": "train", "340": "validation",
                 "350": "test"}
LICENSES = {301: "mit", 302: "mit", 311: "gpl-3.0-only", 321: "cc-by-4.0", 331: None, 341: "apache-2.0",
            342: "apache-2.0", 351: "bsd-3-clause"}
CATEGORY = {"mit": "permissive", "gpl-3.0-only": "copyleft", "cc-by-4.0": "permissive", None: "none",
            "bsd-3-clause": "permissive"}
OPTED_OUT_MARK = "OPTED_OUT_CONCEPT_340_MARK"
ONE_LINE_CHANGED = "# one line of the next version differs: a near duplicate, not an exact one\n"


def _records(tmp: Path) -> dict[int, tuple[str, dict[str, bytes]]]:
    """record id -> (concept id, files of its zip under a GitHub-like top folder)."""
    shared = (STDLIB / "colorsys.py").read_bytes()  # byte for byte in 301, 302 and 321
    main_v1 = (STDLIB / "textwrap.py").read_bytes()
    lines = main_v1.splitlines(keepends=True)
    main_v2 = b"".join(lines[:40] + [ONE_LINE_CHANGED.encode()] + lines[41:])
    secrets_root = tmp / "planted"
    secrets_root.mkdir()
    planted = plant_credentials(secrets_root)
    secret_files = {name: (secrets_root / name).read_bytes() for name in planted}
    opted = f'"""{OPTED_OUT_MARK}"""\nVALUE = 340\n'.encode()
    return {
        301: ("300", {"util.py": shared, "main.py": main_v1}),
        302: ("300", {"util.py": shared, "main.py": main_v2, "new.py": b"print('version 2')\n"}),
        311: ("310", {**secret_files, "tool.py": (STDLIB / "shlex.py").read_bytes()}),
        321: ("320", {"shared.py": shared, "calendar_copy.py": (STDLIB / "calendar.py").read_bytes()}),
        331: ("330", {"fnmatch.py": (STDLIB / "fnmatch.py").read_bytes()}),
        341: ("340", {"opted.py": opted}),
        342: ("340", {"opted.py": opted, "more.py": b"# " + OPTED_OUT_MARK.encode() + b"\n"}),
        351: ("350", {"glob.py": (STDLIB / "glob.py").read_bytes()}),
    }


def _serve(double: Any, records: dict[int, tuple[str, dict[str, bytes]]]) -> None:
    from doubles import ZenodoDouble, make_zip

    for record_id, (concept, files) in records.items():
        hit = ZenodoDouble.make_hit(record_id, created=f"2020-01-{record_id % 28 + 1:02d}", conceptrecid=concept,
                                    title=f"software {concept} v{record_id}")
        if LICENSES[record_id] is None:
            del hit["metadata"]["license"]
        else:
            hit["metadata"]["license"] = {"id": LICENSES[record_id]}
        top = f"sw{concept}-{record_id}"
        double.add_record(hit, {f"{top}.zip": make_zip({f"{top}/{name}": data for name, data in files.items()})})


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The run, its image, its Kaggle export and its Parquet export, made once for this module's tests."""
    from doubles import ZenodoDouble

    tmp = tmp_path_factory.mktemp("export-pipeline")
    records = _records(tmp)
    (tmp / "exclude.txt").write_text("# asked by the author of concept 340\n10.5281/zenodo.340\n")
    with ZenodoDouble() as double:
        _serve(double, records)
        settings = run_config(tmp, double).to_dict()
        settings["zenodo"]["all_versions"] = True
        settings["dataset"] = {"exclude": str(tmp / "exclude.txt")}
        settings["export"] = {"splits": SPLITS}
        config = tmp / "config.yaml"
        config.write_text(yaml.safe_dump(settings))
        assert main(["run", "-c", str(config)]) == 0
    run = tmp / "run"
    image = run / "zenodo-ml.sqsh"
    assert main(["organize", str(image), "--out", str(tmp / "kaggle"), "--workers", "1",
                 "--extensions", "py,pem,yaml,sh"]) == 0
    assert main(["export", str(run), "--out", str(tmp / "parquet")]) == 0
    return {"tmp": tmp, "run": run, "image": image, "kaggle": tmp / "kaggle", "out": tmp / "parquet",
            "records": records, "loaded": _load_as_users_do(tmp / "parquet", tmp)}


READER = textwrap.dedent("""
    import hashlib, json, sys
    import duckdb, numpy as np
    from datasets import load_dataset

    out = {"splits": {}, "duckdb": None}
    ds = load_dataset(sys.argv[1])
    for split, rows in ds.items():
        out["splits"][split] = {"columns": rows.column_names, "rows": [
            {**{k: v for k, v in row.items() if k != "images"},
             "images_shape": list(np.asarray(row["images"], dtype=np.uint32).reshape(-1, 80, 80).shape),
             "images_sha256": hashlib.sha256(np.asarray(row["images"], dtype=np.uint32).tobytes()).hexdigest()}
            for row in rows]}
    out["duckdb"] = duckdb.sql(
        "SELECT regexp_extract(filename, '([a-z]+)-[0-9]+-of-[0-9]+[.]parquet', 1) AS split, count(*), "
        "count(DISTINCT sha256) FROM read_parquet('" + sys.argv[1] + "/data/*.parquet', filename = true) "
        "GROUP BY split ORDER BY split").fetchall()
    print(json.dumps(out))
""")


def _load_as_users_do(out: Path, tmp: Path) -> dict[str, Any]:
    """The export read by a Python that imports only datasets, DuckDB and numpy, with its own caches."""
    env = {**os.environ, "HF_HOME": str(tmp / "hf-home"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", READER, str(out)], capture_output=True, text=True, env=env,
                          cwd=tmp, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def _rows(pipeline: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(row, split=split) for split, part in pipeline["loaded"]["splits"].items() for row in part["rows"]]


def test_datasets_loads_three_splits_with_exactly_the_columns(pipeline) -> None:
    from zenodo_hpc.dataset.export import COLUMNS

    loaded = pipeline["loaded"]["splits"]
    assert set(loaded) == {"train", "validation", "test"}
    for part in loaded.values():
        assert part["columns"] == list(COLUMNS)
        assert part["rows"]


def test_each_rows_images_equal_the_h5s(pipeline) -> None:
    for row in _rows(pipeline):
        array = load_images(pipeline["run"] / "data" / row["record_id"])[row["path"]]
        assert row["images_shape"] == list(array.shape) and row["n_images"] == array.shape[0]
        assert row["images_sha256"] == hashlib.sha256(array.astype(np.uint32).tobytes()).hexdigest()


def test_content_size_and_sha256_are_the_published_bytes(pipeline) -> None:
    for row in _rows(pipeline):
        data = load_files(pipeline["run"] / "data" / row["record_id"])[row["path"]]
        assert row["content"].encode("utf-8") == data and row["size_bytes"] == len(data)
        assert row["sha256"] == hashlib.sha256(data).hexdigest()


def test_no_sha256_twice_and_the_first_by_record_id_is_kept(pipeline) -> None:
    rows = _rows(pipeline)
    assert len({row["sha256"] for row in rows}) == len(rows)
    shared = hashlib.sha256((STDLIB / "colorsys.py").read_bytes()).hexdigest()
    assert [(r["record_id"], r["path"]) for r in rows if r["sha256"] == shared] == [("301", "sw300-301/util.py")]
    paths = {(r["record_id"], r["path"]) for r in rows}
    assert ("302", "sw300-302/util.py") not in paths and ("321", "sw320-321/shared.py") not in paths
    assert ("302", "sw300-302/new.py") in paths  # the new version's own file is there


def test_the_near_duplicate_shares_its_first_rows_cluster(pipeline) -> None:
    rows = {(r["record_id"], r["path"]): r for r in _rows(pipeline)}
    first, later = rows[("301", "sw300-301/main.py")], rows[("302", "sw300-302/main.py")]
    assert ONE_LINE_CHANGED in later["content"] and first["content"] != later["content"]
    assert first["near_dup_cluster"] == later["near_dup_cluster"] == "301/sw300-301/main.py"
    others = [r for key, r in rows.items() if key not in {("301", "sw300-301/main.py"), ("302", "sw300-302/main.py")}]
    assert all(r["near_dup_cluster"] == f"{r['record_id']}/{r['path']}" for r in others)


def test_no_concept_in_two_splits_and_each_where_its_id_says(pipeline) -> None:
    seen: dict[str, set[str]] = {}
    for row in _rows(pipeline):
        seen.setdefault(row["concept_id"], set()).add(row["split"])
    assert seen == {concept: {split} for concept, split in CONCEPT_SPLIT.items() if concept != "340"}


def test_licenses_categories_and_record_fields(pipeline) -> None:
    for row in _rows(pipeline):
        record_id = int(row["record_id"])
        assert row["license"] == LICENSES[record_id]
        assert row["license_category"] == CATEGORY[LICENSES[record_id]]
        concept = pipeline["records"][record_id][0]
        assert (row["concept_id"], row["doi"], row["concept_doi"]) == (
            concept, f"10.5281/zenodo.{record_id}", f"10.5281/zenodo.{concept}")
        assert row["title"] == f"software {concept} v{record_id}" and row["version"] == "1.0"
        name = row["path"].rsplit("/", 1)[-1]
        assert row["extension"] == (None if name == ".env" else name.rsplit(".", 1)[-1])  # a dotfile has none


def test_nothing_of_the_opted_out_concept_anywhere(pipeline) -> None:
    rows = _rows(pipeline)
    assert not [r for r in rows if r["concept_id"] == "340" or OPTED_OUT_MARK in r["content"]]
    with SquashImage(pipeline["image"]) as image:
        assert not {"341", "342"} & set(image.record_ids())
    index = (pipeline["kaggle"] / "index.csv").read_text()
    assert ",341," not in index and ",342," not in index
    assert "341" in (pipeline["run"] / "records.jsonl").read_text()  # it was harvested, then left out


def test_duckdb_reads_every_shard(pipeline) -> None:
    counts = {split: (rows, distinct) for split, rows, distinct in pipeline["loaded"]["duckdb"]}
    loaded = pipeline["loaded"]["splits"]
    assert counts == {split: (len(part["rows"]), len(part["rows"])) for split, part in loaded.items()}


def test_no_credential_in_the_parquet_the_h5s_the_image_or_the_kaggle_pngs(pipeline) -> None:
    values = [value for file_values in FAKE_CREDENTIALS.values() for value in file_values]
    run, rows = pipeline["run"], _rows(pipeline)
    secret_rows = [r for r in rows if r["record_id"] == "311"]
    assert any("-----BEGIN RSA PRIVATE KEY-----" in r["content"] for r in secret_rows)  # the files are there
    assert leaked([r["content"] for r in rows], values) == []
    assert leaked([line for r in rows for line in r["content"].splitlines()], values) == []
    h5_texts = []
    for folder in sorted(p for p in (run / "data").iterdir() if p.name.isdigit()):
        h5_texts += [t.decode("utf-8", "replace") for t in load_files(folder).values()]
        h5_texts += [line for a in load_images(folder).values() for line in image_rows(a)]
    assert leaked(h5_texts, values) == []
    with SquashImage(pipeline["image"]) as image:
        image_texts = [line for rid in image.record_ids() for a in image.images(rid).values() for line in image_rows(a)]
        image_texts += [t.decode("utf-8", "replace") for rid in image.record_ids() for t in image.texts(rid).values()]
    assert leaked(image_texts, values) == []
    png_rows = []
    for png in pipeline["kaggle"].rglob("*.png"):
        with Image.open(png) as picture:
            png_rows += image_rows(np.asarray(picture))
    assert any("BEGIN RSA PRIVATE KEY" in line for line in png_rows)  # the PNGs were read as text
    assert leaked(png_rows, values) == []
