"""zenodo_hpc.dataset.check_summary: what the check before a release found (state/verify.json), read back for
``status``, and the one line it is shown as."""

from __future__ import annotations

import json
from pathlib import Path

from zenodo_hpc.core.state import RunDir
from zenodo_hpc.dataset.check_summary import Check, check_for_status, format_check, last_check


def write_check(run: RunDir, payload: bytes) -> None:
    run.state.mkdir(parents=True, exist_ok=True)
    run.verify.write_bytes(payload)


def test_all_whole() -> None:
    check = Check(checked_at="2026-06-01T10:00:00Z", seconds=0.123, checked=9)
    assert format_check(check) == ("check before the release (2026-06-01T10:00:00Z): 9 done records checked in "
                                   "0.1 s: all whole")
    assert format_check(check.to_json()) == format_check(check)  # as status reads it back from the file


def test_damaged_and_reverified_name_three_records_and_count_the_rest() -> None:
    check = Check(checked_at="t", seconds=2, checked=40, reverified=["7", "8", "9", "10", "11"],
                  damaged={"4": "images.h5: size 10, not 12", "1": "purged", "3": "purged", "2": "purged"})
    assert format_check(check) == (
        "check before the release (t): 40 done records checked in 2.0 s; 4 purged or damaged, made again "
        "(1: purged; 2: purged; 3: purged; and 1 more); 5 re-verified, not made again (done marker gone, files "
        "whole: 7, 8, 9 and 2 more)")


def test_status_says_which_damaged_records_are_not_done_again(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    write_check(run, json.dumps(Check(checked_at="t", checked=5, damaged={"1": "purged", "2": "purged"}).to_json())
                .encode())
    found = check_for_status(run, done_ids={"1", "5"})
    assert found is not None and found["not_done_again"] == ["2"]
    assert format_check(found).endswith("; 1 not done again yet (2)")
    assert format_check(check_for_status(run, done_ids={"1", "2"}) or {}).endswith("; all 2 done again")


def test_no_check_yet_or_an_unreadable_one_is_none(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    assert last_check(run) is None and check_for_status(run, set()) is None  # before the first check
    write_check(run, b'{"checked_at": "t", "chec')  # cut off mid-write
    assert last_check(run) is None
    write_check(run, b"[1, 2]")  # JSON, but not what a check writes
    assert last_check(run) is None
    write_check(run, json.dumps(Check(checked_at="t", checked=3).to_json()).encode())
    assert last_check(run) == {"checked_at": "t", "seconds": 0.0, "checked": 3, "reverified": [], "damaged": {}}
