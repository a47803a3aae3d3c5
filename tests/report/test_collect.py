"""zenodo_hpc.report.collect: what the report shows, read from a run directory built here (records, markers,
metadata, releases), calling collect and its helpers directly; no plotting."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import licensed_hit

from zenodo_hpc.core.config import Config, config_from_dict
from zenodo_hpc.core.state import RunDir, append_records, mark_done, mark_failed, open_run
from zenodo_hpc.record.store import metadata_json_name
from zenodo_hpc.report.collect import collect, license_name, overall_rate_per_min, read_releases, version_key


def config(tmp_path: Path) -> Config:
    return config_from_dict({"run": {"scratch": str(tmp_path), "name": "run"}})


def tree(**files: Any) -> dict[str, Any]:
    """A record's tree: ``src/<name>`` files with their code images (``None``: skipped, no images)."""
    children = {name.replace("_", "."): ({"type": "file", "segments": n} if n is not None else
                                         {"type": "file", "skipped": "binary"}) for name, n in files.items()}
    return {"type": "dir", "children": {"src": {"type": "dir", "children": children}}}


def add_done(run: RunDir, record_id: str, meta: dict[str, Any] | bytes, task: str = "g0001-s00000 (job 1_0)") -> None:
    folder = run.record_folder(record_id)
    folder.mkdir(parents=True)
    data = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    (folder / metadata_json_name(record_id)).write_bytes(data)
    mark_done(run, record_id, {"task": task, "seconds": 2.5})


@pytest.fixture
def run(tmp_path: Path) -> RunDir:
    run = open_run(config(tmp_path))
    append_records(run.records, [
        {"id": 1, "created": "2016-03-01T10:00:00+00:00"}, {"id": 2, "created": "2016-07-01"},
        {"id": 3, "metadata": {"publication_date": "2019-01-01"}}, {"id": 4, "created": "2019-02-02"},
        {"id": 5, "created": "2019-05-05"}, {"id": 6}])
    add_done(run, "1", {"hit": {"title": "one", "metadata": {"license": {"id": "mit"}}},
                        "tree": tree(a_py=3, b_py=5, Makefile=1, logo_png=None),
                        "stats": {"skipped": {"binary": 1, "too_large": 2}},
                        "source": {"archives": ["a.zip"], "not_fetched": [{"reason": "error: HTTP 500"}]}})
    add_done(run, "2", {"hit": {"metadata": {"title": "two", "license": "cc-by-4.0"}}, "tree": tree(main_c=2, x_py=1),
                        "stats": "written by hand"})
    add_done(run, "3", b"{not json")
    mark_failed(run, "4", reason="http_404", message="gone", attempt=1, task="g0001-s00001", quarantined=True)
    mark_failed(run, "5", reason="http_503", message="busy", attempt=1, task="g0001-s00001", quarantined=False)
    return run


def test_collect_counts_records_files_and_images_by_status_and_extension(run: RunDir, tmp_path: Path) -> None:
    facts = collect(run, config(tmp_path), accounting=False)
    assert facts.years == {"2016": {"done": 2}, "2019": {"done": 1, "quarantined": 1, "failed": 1},
                           "unknown": {"pending": 1}}
    assert facts.done_read == 2 and len(facts.finished) == 3  # record 3's metadata is unreadable, it finished
    assert facts.notes == ["1 done record(s) have no readable metadata JSON in data/ (3): left out of the dataset "
                           "figures"]
    assert facts.files_by_ext == {"py": 3, "(none)": 1, "c": 1}
    assert facts.images_by_ext == {"py": 9, "(none)": 1, "c": 2}
    assert facts.records_by_ext == {"py": 2, "(none)": 1, "c": 1}
    assert (facts.total_files, facts.total_images) == (5, 12) and sorted(facts.images_per_record) == [3, 9]
    assert facts.images_per_file == {1: 2, 2: 1, 3: 1, 5: 1}
    samples = {extension: picked for extension, picked in facts.samples.items() if picked}
    assert samples == {"py": [("1", "src/b.py"), ("2", "src/x.py")], "c": [("2", "src/main.c")]}  # no "(none)"
    assert facts.skipped == {"binary": 1, "too_large": 2, "not downloaded: error": 1}
    assert facts.licenses == {"mit": 1, "cc-by-4.0": 1}
    assert facts.largest == [(9, "1", "one"), (3, "2", "two")]
    assert len(facts.downloads) == 1 and facts.downloads[0][1] == 1


def test_a_license_is_its_id_or_the_plain_string_of_older_records() -> None:
    assert license_name({"metadata": {"license": {"id": "mit", "title": "MIT License"}}}) == "mit"
    assert license_name({"metadata": {"license": {"title": "Other (Open)"}}}) == "unknown"  # no id: as the exports
    assert license_name({"metadata": {"license": " cc-by-4.0 "}}) == "cc-by-4.0"
    assert license_name({"metadata": {}}) == license_name({"metadata": "x"}) == "(none given)"


def test_versions_sort_by_their_numbers() -> None:
    names = ["v10", "v2", "2024-06", "2024-01", "2026.11.29", "2026.2.1"]
    assert sorted(names, key=version_key) == ["2024-01", "2024-06", "2026.2.1", "2026.11.29", "v2", "v10"]


def test_releases_count_records_added_and_removed(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    assert read_releases(run) == []  # no releases folder
    for version, lines in (("v10", ['{"id": 1}', '{"id": 3}', '{"id": 4}']),
                           ("v2", ['{"id": 1}', '{"id": 2}', '{"id": 9, "status": "withdrawn"}', "not json", "[1]"])):
        folder = run.releases / version
        folder.mkdir(parents=True)
        (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    (run.releases / "v11").mkdir()  # no manifest: not a release
    assert read_releases(run) == [("v2", 2, 2, 0), ("v10", 3, 2, 1)]


def test_the_overall_rate_is_records_per_minute_between_the_first_and_last(run: RunDir, tmp_path: Path) -> None:
    facts = collect(run, config(tmp_path), accounting=False)
    facts.finished = [1000.0, 1060.0, 1120.0]
    assert overall_rate_per_min(facts) == pytest.approx(1.0)
    facts.finished = [1000.0, 1000.0]
    assert overall_rate_per_min(facts) is None
    facts.finished = [1000.0]
    assert overall_rate_per_min(facts) is None


def test_the_license_figure_counts_the_ids_the_exports_name() -> None:
    assert license_name(licensed_hit("7", "CC-BY-4.0")) == "cc-by-4.0"  # as recorded in 2021, in lower case
    assert license_name(licensed_hit("7", "gpl-3.0-only", "rdm")) == "gpl-3.0-only"  # InvenioRDM's rights
    assert license_name(licensed_hit("7", "MIT", "string")) == "mit"
    assert license_name(licensed_hit("7", None)) == "(none given)"
    assert license_name({"metadata": {"license": {"id": "<script>"}}}) == "unknown"
