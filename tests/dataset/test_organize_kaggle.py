"""What organize writes for Kaggle: dataset names its client accepts, each record's license, Kaggle's one license,
and the license filter (export.license_categories, --license-categories): records of several licenses, in the
shapes Zenodo gives them, some left out for their category, counted and named, never silently dropped."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import export_files as tree
from helpers import licensed_hit
from helpers import read_organize_index as read_index

from zenodo_hpc.core.config import config_from_dict
from zenodo_hpc.core.errors import UserError
from zenodo_hpc.core.licenses import CATEGORIES
from zenodo_hpc.core.state import append_records, mark_done, open_run
from zenodo_hpc.dataset.load import load_images
from zenodo_hpc.dataset.organize import check_package_names, format_summary, organize
from zenodo_hpc.record.process import process_sources

LICENSED = {"10": ("MIT", "string"), "11": ("apache-2.0", "rdm"), "12": ("GPL-3.0", "legacy"),
            "13": ("cc-by-4.0", "legacy"), "14": (None, "legacy")}  # legacy GPL-3.0: gpl-3.0-only today


@pytest.fixture(scope="module")
def licensed_run(tmp_path_factory: pytest.TempPathFactory):
    """Five done records, one small Python file each, with the licenses of LICENSED in the shapes Zenodo gives
    them (recorded hits: tests/helpers.py licensed_hit); the run's config exports permissive and none only."""
    tmp = tmp_path_factory.mktemp("licensed")
    cfg = config_from_dict({"run": {"scratch": str(tmp), "name": "r"},
                            "export": {"license_categories": ["permissive", "none"]}})
    run = open_run(cfg)
    hits = []
    for record_id, (license_id, shape) in LICENSED.items():
        folder = tmp / "sources" / record_id / f"code-{record_id}"
        folder.mkdir(parents=True)
        (folder / "main.py").write_text(f"print({record_id})\n" * (10 * int(record_id)))
        hit = licensed_hit(record_id, license_id, shape)
        process_sources(record_id, [(folder, "")], run.data, cfg, hit=hit, source_info={"kind": "local"})
        mark_done(run, record_id, {})
        hits.append(hit)
    append_records(run.records, hits)
    return run, cfg


def record_licenses(out: Path) -> dict[str, str]:
    return {row["record_id"]: row["license"] for row in read_index(out)}


def test_the_runs_license_categories_leave_records_out_counted_and_named(licensed_run, tmp_path: Path) -> None:
    run, _ = licensed_run
    out = tmp_path / "out"
    result = organize(run.root, out, workers=1, progress=False)  # run.yaml: permissive and none
    assert record_licenses(out) == {"10": "mit", "11": "apache-2.0", "13": "cc-by-4.0", "14": ""}
    assert not (out / "py" / "12").exists()
    left = [(e.record_id, e.license, e.category) for e in result.license_left_out]
    assert left == [("12", "gpl-3.0", "copyleft")]
    assert result.license_left_out[0].images == len(load_images(run.record_folder("12"))["code-12/main.py"])
    line = format_summary(result)
    assert "\n" not in line
    assert line.endswith(f"; left out for their license (categories kept: permissive, none): 1 record, "
                         f"{result.license_left_out[0].images} images (gpl-3.0 1): 12")
    package = json.loads((out / "datapackage.json").read_text(encoding="utf-8"))
    assert [entry["name"] for entry in package["licenses"]] == ["apache-2.0", "cc-by-4.0", "mit"]  # none: no entry
    block = package["zenodo_hpc"]
    assert block["license_categories"] == ["permissive", "none"] and block["kaggle_license"] == "other"
    assert block["license_left_out"] == [{"record_id": "12", "license": "gpl-3.0", "category": "copyleft",
                                          "images": result.license_left_out[0].images}]
    assert {e["license"]: e["category"] for e in block["licenses"]} == {
        "mit": "permissive", "apache-2.0": "permissive", "cc-by-4.0": "permissive", None: "none"}
    description = package["description"]
    assert "Left out for their license (this export keeps the categories permissive, none): 1 record" in description
    assert f"| 12 | gpl-3.0 | copyleft | {result.license_left_out[0].images} |" in description
    assert "| (none) | no license | none | 1 |" in description


def test_the_flag_overrides_the_run_and_kaggle_gets_the_one_license(licensed_run, tmp_path: Path) -> None:
    run, _ = licensed_run
    out = tmp_path / "out"
    result = organize(run.root, out, workers=1, progress=False, license_categories="copyleft")
    assert record_licenses(out) == {"12": "gpl-3.0"}
    assert [e.record_id for e in result.license_left_out] == ["10", "11", "13", "14"]
    package = json.loads((out / "datapackage.json").read_text(encoding="utf-8"))
    assert package["licenses"] == [{"name": "gpl-3.0", "title": "GNU General Public License v3.0 only",
                                    "path": "https://www.gnu.org/licenses/gpl-3.0-standalone.html"}]
    assert package["zenodo_hpc"]["kaggle_license"] == "GPL-3.0"  # the one license, as Kaggle names it
    assert "Kaggle takes one license per dataset: `GPL-3.0`, the license every record here shares" in package[
        "description"]
    every = organize(run.root, out, workers=1, progress=False, license_categories=list(CATEGORIES))
    assert every.license_left_out == [] and len(record_licenses(out)) == 5
    nothing_but_none = organize(run.root, out, workers=1, progress=False, license_categories=["none"])
    assert nothing_but_none.licenses == {"(none)": 1}
    package = json.loads((out / "datapackage.json").read_text(encoding="utf-8"))
    assert "licenses" not in package and package["zenodo_hpc"]["kaggle_license"] == "unknown"


def test_bad_or_emptying_license_categories_are_one_line_errors(licensed_run, tmp_path: Path) -> None:
    run, _ = licensed_run
    out = tmp_path / "out"
    with pytest.raises(UserError, match=r"--license-categories: unknown license category libre: use permissive, "):
        organize(run.root, out, workers=1, license_categories="permissive,libre")
    with pytest.raises(UserError, match=r"every record with a file to export has a license of a category not "
                                        r"exported \(kept: other; left out: .*\); nothing to export"):
        organize(run.root, out, workers=1, license_categories="other")
    assert not out.exists()


def test_an_image_holds_no_config_so_only_the_flag_chooses(licensed_run, tmp_path: Path) -> None:
    if shutil.which("mksquashfs") is None:
        pytest.skip("mksquashfs not on PATH (apt-get install squashfs-tools)")
    pytest.importorskip("PySquashfsImage", reason="reading the image needs the image extra (pip install -e '.[image]')")
    from zenodo_hpc.dataset.pack import pack

    run, cfg = licensed_run
    image = pack(run, cfg, progress=False).image
    everything = organize(image, tmp_path / "all", workers=1, progress=False)
    assert everything.license_left_out == [] and len(record_licenses(tmp_path / "all")) == 5
    chosen = organize(image, tmp_path / "chosen", workers=1, progress=False, license_categories="permissive,none")
    organize(run.root, tmp_path / "from-run", workers=1, progress=False)
    assert [e.record_id for e in chosen.license_left_out] == ["12"]
    assert tree(tmp_path / "chosen") == tree(tmp_path / "from-run")  # the image's metadata gives the same licenses


def test_the_command_line_flag(licensed_run, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from zenodo_hpc.cli import main

    run, _ = licensed_run
    out = tmp_path / "out"
    assert main(["organize", str(run.root), "--out", str(out), "--workers", "1",
                 "--license-categories", "copyleft,none"]) == 0
    line = capsys.readouterr().out.strip()
    assert "licenses: (none) 1, gpl-3.0 1;" in line and line.endswith(": 10, 11, 13")
    assert record_licenses(out) == {"12": "gpl-3.0", "14": ""}
    assert main(["organize", str(run.root), "--out", str(out), "--license-categories", "free"]) != 0
    assert capsys.readouterr().err == ("zenodo-hpc organize: error: --license-categories: unknown license category "
                                       "free: use permissive, copyleft, other, none\n")


KAGGLE_VERDICT = """
import json, os, sys
from kaggle.api.kaggle_api_extended import KaggleApi

class Checked(Exception):
    pass

def stop(*args, **kwargs):  # the first network call, once the metadata passed the client's checks
    raise Checked

api = KaggleApi()
api.config_values = {"username": "alice"}
api.dataset_status = stop
verdicts = {}
for i, name in enumerate(json.loads(sys.argv[2])):
    folder = os.path.join(sys.argv[1], str(i))
    os.makedirs(folder)
    with open(os.path.join(folder, "dataset-metadata.json"), "w") as handle:
        json.dump({"id": "alice/" + name, "title": "A fine title", "licenses": [{"name": "CC0-1.0"}]}, handle)
    try:
        api._validate_slug_syntax(name)  # the client's slug syntax
        api.dataset_create_new(folder)  # its checks of a new dataset (the slug's length among them)
    except Checked:
        verdicts[name] = True
    except ValueError as exc:
        verdicts[name] = str(exc)
print(json.dumps(verdicts))
"""
SLUGS = ["abc", "abcde", "abcdef", "zenodo-ml", "zenodo-ml-code-images", "a1-b2-c3", "x" * 50, "x" * 51, "a--bcdef",
         "-abcdef", "abcdef-", "Abcdef", "abc_def", "abc def"]


def test_dataset_names_are_the_ones_the_kaggle_client_accepts(licensed_run, tmp_path: Path) -> None:
    """organize refuses a slug exactly when the installed kaggle client would (its own checks, run in a child)."""
    if importlib.util.find_spec("kaggle") is None:
        pytest.skip("the kaggle client is not installed (the kaggle extra): its slug rules cannot be asked")
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "KAGGLE_API_ENVIRONMENT": "LOCALHOST"}
    env = {k: v for k, v in env.items() if k not in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN",
                                                     "KAGGLE_CONFIG_DIR")}
    child = subprocess.run([sys.executable, "-c", KAGGLE_VERDICT, str(tmp_path / "meta"), json.dumps(SLUGS)],
                           capture_output=True, text=True, timeout=120, env=env)
    assert child.returncode == 0, child.stderr
    verdicts = json.loads(child.stdout.strip().splitlines()[-1])
    assert verdicts["abcdef"] is True and verdicts["abc"] is not True  # the client itself says 6 to 50
    run, _ = licensed_run
    for name, verdict in verdicts.items():
        if verdict is True:
            check_package_names(name, "A fine title", "alice")
        else:
            with pytest.raises(UserError, match="bad dataset name"):
                organize(run.root, tmp_path / "out", name=name, workers=1, progress=False)
