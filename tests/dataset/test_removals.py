"""zenodo_hpc.dataset.removals: the dataset.exclude list (parsed, and matched against records) and the records
withdrawn from Zenodo (marked, their folders removed), called directly on a run directory of its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zenodo_hpc.core.config import Config, config_from_dict
from zenodo_hpc.core.errors import UserError
from zenodo_hpc.core.state import DONE, append_records, ids_in, mark_done, open_run, read_failure
from zenodo_hpc.dataset.removals import (
    WITHDRAWN,
    excluded,
    filter_lines,
    left_out,
    read_exclude_list,
    withdraw,
    withdrawn,
)


def config(tmp_path: Path, exclude: Path | None) -> Config:
    return config_from_dict({"run": {"scratch": str(tmp_path), "name": "run"},
                             "dataset": {"exclude": str(exclude) if exclude else None}})


def test_ids_dois_and_concept_dois_are_read_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "exclude.txt"
    path.write_text("# authors who asked to be left out\n"
                    "0301   # a record id, leading zero and all\n"
                    "\n"
                    "https://doi.org/10.5281/ZENODO.302\n"
                    "doi:10.5281/zenodo.905  # a concept DOI\n"
                    "301\n")  # named again: its first line is the one a reason names
    names = read_exclude_list(path)
    assert names.ids == {"301": 2}
    assert names.dois == {"10.5281/zenodo.302": 4, "10.5281/zenodo.905": 5}


def test_a_record_is_left_out_by_its_id_its_doi_or_its_concept_doi(tmp_path: Path) -> None:
    path = tmp_path / "private" / "exclude.txt"
    path.parent.mkdir()
    path.write_text("301\n10.5281/zenodo.302\n10.5281/zenodo.905\n")
    names = read_exclude_list(path)
    assert names.reason({"id": 301}) == "excluded by dataset.exclude (exclude.txt, line 1: its record id)"
    assert names.reason({"id": 7, "doi": "10.5281/Zenodo.302"}) == (
        "excluded by dataset.exclude (exclude.txt, line 2: its DOI)")
    assert names.reason({"id": 8, "metadata": {"conceptdoi": "10.5281/zenodo.905"}}) == (
        "excluded by dataset.exclude (exclude.txt, line 3: its concept DOI)")  # the local path is never named
    assert names.reason({"id": 9, "doi": "10.5281/zenodo.9", "metadata": "not a mapping"}) is None


@pytest.mark.parametrize(("text", "line", "bad"), [
    ("301\n10.5281/zenodo.302\nzenodo 303\n", 3, "'zenodo 303'"),
    ("# ok\n\n12x\n", 3, "'12x'"),
    ("https://zenodo.org/records/301\n", 1, "'https://zenodo.org/records/301'"),
])
def test_a_bad_exclude_line_is_a_one_line_error_naming_file_and_line(tmp_path: Path, text: str, line: int,
                                                                     bad: str) -> None:
    path = tmp_path / "exclude.txt"
    path.write_text(text)
    with pytest.raises(UserError) as caught:
        read_exclude_list(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: {bad} is not a record id, a DOI or a concept DOI")
    assert "\n" not in message


def test_an_exclude_file_not_utf8_or_missing_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "exclude.txt"
    path.write_bytes(b"301\n302\n\xff\xfe\n")
    with pytest.raises(UserError, match=rf"^{path}:3: not UTF-8 text"):
        read_exclude_list(path)
    with pytest.raises(UserError, match=r"^dataset\.exclude: cannot read .*nowhere\.txt: "):
        read_exclude_list(tmp_path / "nowhere.txt")


def test_excluded_names_the_harvested_records_the_list_leaves_out(tmp_path: Path) -> None:
    exclude = tmp_path / "exclude.txt"
    exclude.write_text("301\n10.5281/zenodo.905\n")
    run = open_run(config(tmp_path, None))
    append_records(run.records, [{"id": 301}, {"id": 302, "conceptdoi": "10.5281/zenodo.905"}, {"id": 303}])
    assert excluded(run, config(tmp_path, None)) == {}  # no list: nothing is left out
    assert excluded(run, config(tmp_path, exclude)) == {
        "301": "excluded by dataset.exclude (exclude.txt, line 1: its record id)",
        "302": "excluded by dataset.exclude (exclude.txt, line 2: its concept DOI)"}


@pytest.mark.parametrize("keep_outputs", [False, True])
def test_withdraw_marks_the_record_withdrawn_and_removes_its_folder_unless_kept(tmp_path: Path,
                                                                                  keep_outputs: bool) -> None:
    exclude = tmp_path / "exclude.txt"
    exclude.write_text("303\n")
    cfg = config(tmp_path, exclude)
    run = open_run(cfg)
    append_records(run.records, [{"id": i} for i in (301, 302, 303)])
    for record_id in ("301", "302", "303"):
        run.record_folder(record_id).mkdir()
        (run.record_folder(record_id) / "images.h5").write_bytes(b"not really h5")
        mark_done(run, record_id, {})

    gone = withdraw(run, {"301": "deleted from Zenodo (410 Gone: spam)"}, keep_outputs=keep_outputs)

    assert gone == ([] if keep_outputs else ["301"])
    assert run.record_folder("301").is_dir() is keep_outputs
    assert not list(run.data.glob(".*"))  # the folder renamed out of the way is gone too
    assert ids_in(run, DONE) == {"302", "303"}
    failure = read_failure(run, "301")
    assert failure is not None and failure.reason == WITHDRAWN and failure.quarantined
    assert withdrawn(run) == {"301": "deleted from Zenodo (410 Gone: spam)"}
    assert left_out(run, cfg) == {"301": "deleted from Zenodo (410 Gone: spam)",
                                  "303": "excluded by dataset.exclude (exclude.txt, line 1: its record id)"}


def test_filter_lines_drops_the_records_named_and_keeps_every_other_line() -> None:
    lines = [json.dumps({"id": 301}).encode(), json.dumps({"id": "302"}).encode(), b"not json",
             b"[1, 2]", json.dumps({"id": 303}).encode()]
    assert list(filter_lines(lines, {"301", "302"})) == [b"not json", b"[1, 2]", lines[4]]
