"""The run directory survives bad files: each garbled marker, plan or submission is repaired or named.

Every case is a real finished run (Zenodo double, debug executor) with one file damaged the ways files get
damaged on a shared file system: cut short by a crash, emptied, overwritten with binary junk, or replaced
by other JSON. Then ``status``, ``resume --dry-run`` and ``pack`` run through the command line, as an
operator would run them: no "internal error", no traceback, and a clear line naming the file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from helpers import run_config

from zenodo_hpc.cli import main
from zenodo_hpc.core.config import RUN_DIR_ENTRIES
from zenodo_hpc.core.errors import UserError
from zenodo_hpc.core.liveness import identity
from zenodo_hpc.core.state import (
    RunDir,
    attempts_of,
    driver_lock,
    ids_in,
    last_attempt_owner,
    mark_failed,
    mark_started,
    open_run,
    read_failure,
    scan_run_records,
    unmark_started,
)
from zenodo_hpc.orchestrate.plan import generations, next_generation
from zenodo_hpc.orchestrate.submit import submit_pending
from zenodo_hpc.zenodo.harvest import harvest

ALL = {str(100 + i) for i in range(1, 13)}


def cut_short(path: Path) -> bytes:
    return path.read_bytes()[: len(path.read_bytes()) // 2]


DAMAGE = {
    "cut short": cut_short,
    "empty": lambda path: b"",
    "binary junk": lambda path: b"\x00\xff\xfe\x80garbage\x81\n{\"a\":",
    "zeros": lambda path: b"\x00" * 64,  # what some file systems leave of a file written just before a crash
    "other JSON": lambda path: b"[1, 2, 3]\n",
}


def damage(path: Path, how: str) -> None:
    path.write_bytes(DAMAGE[how](path))


@pytest.fixture
def finished(tmp_path: Path, zenodo_with_records):
    """A run whose record 104 failed once (a 404: quarantined at once), the other 11 done."""
    hit = next(h for h in _hits(zenodo_with_records) if h["id"] == 104)
    zenodo_with_records.fail(f"/api/records/104/files/{hit['files'][0]['key']}/content", "404", times=1)
    cfg = run_config(tmp_path, zenodo_with_records)
    harvest(cfg, progress=False)
    run = open_run(cfg)
    submit_pending(run, cfg, kind="debug")
    assert read_failure(run, "104").quarantined and ids_in(run, "done") == ALL - {"104"}
    return run, cfg


def _hits(double) -> list[dict]:
    import requests

    return requests.get(f"{double.api_url}/records", params={"size": 25}).json()["hits"]["hits"]


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    assert "internal error" not in err and "Traceback" not in err
    return code, out, err


# --- state/failed/<id>.json ------------------------------------------------------------------------


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_a_garbled_failure_marker_is_a_failure_that_the_next_attempt_rewrites(finished, how: str,
                                                                             capsys: pytest.CaptureFixture) -> None:
    run, _ = finished
    path = run.state / "failed" / "104.json"
    damage(path, how)
    code, out, err = cli(capsys, "status", str(run.root))
    assert code == 0 and "failed             1  (unreadable_marker 1)" in out
    assert f"{path}: unreadable" in err and "until `zenodo-hpc resume` tries it again" in err
    code, out, _ = cli(capsys, "resume", "--dry-run", str(run.root))
    assert code == 0 and out.startswith("plan 2: 1 records in 1 shards")  # the quarantine was in the lost file
    code, _, err = cli(capsys, "pack", str(run.root))
    assert code == 1 and "is not complete: 11 done, 1 failed" in err
    code, out, _ = cli(capsys, "resume", str(run.root))  # the 404 has passed: 104 is made
    assert code == 0 and ids_in(run, "done") == ALL and not path.exists()
    assert cli(capsys, "pack", str(run.root))[0] == 0


def test_a_new_failure_sets_the_garbled_marker_aside(finished) -> None:
    run, _ = finished
    path = run.state / "failed" / "104.json"
    damage(path, "binary junk")
    mark_failed(run, "104", reason="http_500", message="boom", attempt=2, task="t", quarantined=False)
    failure = read_failure(run, "104")
    assert failure.reason == "http_500" and len(failure.history) == 1
    assert (run.state / "failed" / ".104.json.corrupt").read_bytes() == DAMAGE["binary junk"](path)
    assert ids_in(run, "failed") == {"104"}  # the kept copy is not a marker


# --- state/done/<id>.json: only pack reads it (tests/dataset/test_pack.py) -----------------------------------


def test_status_and_resume_do_not_need_done_markers_to_be_readable(finished, capsys: pytest.CaptureFixture) -> None:
    run, _ = finished
    damage(run.state / "done" / "105.json", "binary junk")
    code, out, _ = cli(capsys, "status", str(run.root))
    assert code == 0 and "done              11" in out
    code, out, _ = cli(capsys, "resume", "--dry-run", str(run.root))
    assert code == 0 and "plan 2: 0 records" not in out and "105" not in out


# --- state/attempts/<id> ---------------------------------------------------------------------------


def test_junk_in_an_attempts_file_counts_for_nothing(finished, capsys: pytest.CaptureFixture) -> None:
    run, _ = finished
    path = run.state / "attempts" / "104"
    assert attempts_of(run, "104") == 1
    path.write_bytes(path.read_bytes() + b"\x00\xff\n\x80\x81\n\n2026 junk\tx\nhalf a li")  # no newline at the end
    assert attempts_of(run, "104") == 1
    code, out, err = cli(capsys, "status", str(run.root))
    assert code == 0 and "quarantined        1" in out
    assert cli(capsys, "resume", "--dry-run", str(run.root))[0] == 0
    assert mark_started(run, "104", "g0002-s00000") == 2  # on a line of its own, after the cut one
    assert last_attempt_owner(run, "104") == identity()
    unmark_started(run, "104")  # takes back the real attempt, not a junk line
    assert attempts_of(run, "104") == 1 and b"half a li\n" in path.read_bytes()


# --- plans/<gen>.json ------------------------------------------------------------------------------


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_a_garbled_plan_stops_resume_naming_it_while_status_and_pack_go_on(finished, how: str,
                                                                          capsys: pytest.CaptureFixture) -> None:
    run, _ = finished
    (run.state / "done" / "105.json").unlink()  # 105 is to be made again
    path = run.root / "plans" / "0001.json"
    damage(path, how)
    code, out, _ = cli(capsys, "status", str(run.root))
    assert code == 0 and "done              10" in out
    assert f"plan 1 [debug]: {path}: unreadable (" in out and "restore it" in out
    code, _, err = cli(capsys, "resume", "--dry-run", str(run.root))
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert f"{path}: unreadable" in err and "move it away (e.g. to 0001.json.bad)" in err
    assert "resume` then plans its unfinished records again" in err
    assert cli(capsys, "pack", "--allow-partial", str(run.root))[0] == 0
    path.rename(path.with_name("0001.json.bad"))  # what the message says to do, once its tasks have ended
    assert generations(run) == [] and next_generation(run) == 2  # never generation 1 again
    code, out, _ = cli(capsys, "resume", "--dry-run", str(run.root))
    assert code == 0 and out.startswith("plan 2: 1 records in 1 shards (10 done, 1 quarantined of 12)")


# --- state/submissions/<gen>.json --------------------------------------------------------------------


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_a_garbled_submission_is_shown_without_task_states_and_stops_resume(finished, how: str,
                                                                           capsys: pytest.CaptureFixture) -> None:
    run, _ = finished
    (run.state / "done" / "105.json").unlink()  # 105 is to be made again
    path = run.state / "submissions" / "0001.json"
    damage(path, how)
    code, out, err = cli(capsys, "status", str(run.root))
    assert code == 0 and "done              10" in out and "plan 1 [submission unreadable]: 4 shards" in out
    assert f"{path}: unreadable" in err and "shown without its task states" in err
    code, _, err = cli(capsys, "resume", "--dry-run", str(run.root))
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert f"{path}: unreadable" in err and "cannot be checked" in err and "move it away" in err
    assert cli(capsys, "pack", "--allow-partial", str(run.root))[0] == 0
    path.rename(path.with_name("0001.json.bad"))
    code, out, _ = cli(capsys, "resume", "--dry-run", str(run.root))
    assert code == 0 and out.startswith("plan 2: 1 records in 1 shards (10 done, 1 quarantined of 12)")


# --- records.jsonl ---------------------------------------------------------------------------------


def test_lines_no_plan_holds_are_no_records_for_any_command(finished, capsys: pytest.CaptureFixture) -> None:
    """A hit an older harvest kept (an id that is no Zenodo id) and a record's line twice: the plans leave both out,
    so status, resume, pack and run must not count them either (they said "1 pending" / "all accounted for")."""
    run, _ = finished
    lines = run.records.read_bytes().splitlines(keepends=True)
    run.records.write_bytes(b"".join(lines) + b'{"id": "../../x", "metadata": {}}\n' + lines[0])
    code, out, _ = cli(capsys, "status", str(run.root))
    assert code == 0 and "run " in out and ": 12 records" in out and "pending            0" in out
    assert "complete: every record is done or quarantined" in out
    code, out, _ = cli(capsys, "resume", "--dry-run", str(run.root))
    assert code == 0 and "all 12 records are accounted for (11 done, 1 quarantined)" in out
    code, out, _ = cli(capsys, "run", "-c", str(run.run_yaml))
    assert code == 0 and "holds 11 records" in out and "not complete" not in out
    assert cli(capsys, "pack", str(run.root))[0] == 0


@pytest.mark.parametrize("value", ["Infinity", "-Infinity", "NaN", "1e999", "-1E+0400", "1" * 400 + ".0",
                                   "[" * 150 + "]" * 150])
def test_a_record_holding_an_infinite_number_or_deep_nesting_is_no_record(tmp_path: Path, value: str) -> None:
    """Reading records.jsonl spares the walk through each record when its reader saw no such number: every
    spelling of one (and nesting too deep to walk) must still leave the line out."""
    path = tmp_path / "records.jsonl"
    path.write_text('{"id": 1, "metadata": {"x": 1.5}}\n' f'{{"id": 2, "metadata": {{"x": {value}}}}}\n'
                    '{"id": 3, "metadata": {}}\n')
    assert [record_id for _, record_id, _ in scan_run_records(path)] == ["1", "3"]


def test_markers_of_a_line_removed_by_hand_count_for_nothing(finished, capsys: pytest.CaptureFixture) -> None:
    """A record's line deleted (a damaged line's repair, before the harvest brings it back): its done marker and
    folder stay, and must not make the counts disagree with the records, nor its folder enter the image."""
    run, _ = finished
    lines = run.records.read_bytes().splitlines(keepends=True)
    run.records.write_bytes(b"".join(lines[:4] + lines[5:]))  # record 105, done
    code, out, _ = cli(capsys, "status", str(run.root))
    assert code == 0 and ": 11 records" in out and "done              10" in out
    assert "complete: every record is done or quarantined" in out
    code, out, _ = cli(capsys, "resume", "--dry-run", str(run.root))
    assert code == 0 and "all 11 records are accounted for (10 done, 1 quarantined)" in out
    code, out, _ = cli(capsys, "pack", str(run.root))
    assert code == 0 and "holds 10 records" in out


RECORDS_DAMAGE = {
    "a byte that is not UTF-8": (lambda line: line.replace(b'"title":', b'"title\xff":'), "not UTF-8 text"),
    "another JSON value": (lambda line: b"[1, 2, 3]\n", "a JSON list, not a record"),
    "half a line": (lambda line: line[: len(line) // 2] + b"\n", "cut short or not JSON"),
}


@pytest.mark.parametrize("how", sorted(RECORDS_DAMAGE))
def test_a_damaged_line_of_records_jsonl_is_one_line_saying_how_to_repair_it(finished, how: str,
                                                                            capsys: pytest.CaptureFixture) -> None:
    run, cfg = finished
    lines = run.records.read_bytes().splitlines(keepends=True)
    assert json.loads(lines[4])["id"] == 105
    change, why = RECORDS_DAMAGE[how]
    run.records.write_bytes(b"".join(lines[:4] + [change(lines[4])] + lines[5:]))
    errors = []
    for args in (["status", str(run.root)], ["resume", "--dry-run", str(run.root)], ["pack", str(run.root)],
                 ["fetch", str(run.root)], ["harvest", "-c", str(run.run_yaml)], ["run", "-c", str(run.run_yaml)]):
        code, out, err = cli(capsys, *args)
        assert code == 1 and "complete" not in out, args
        errors.append(err.strip().splitlines()[-1])
    for err in errors:
        assert f"{run.records}: line 5 (byte {sum(map(len, lines[:4]))}) is damaged ({why}" in err
        assert f"delete that line (after a copy: sed -i '5d' {run.records})" in err
    subprocess.run(["sed", "-i", "5d", str(run.records)], check=True)  # what the message says, word for word
    shutil.rmtree(run.state / "harvest")
    code, out, _ = cli(capsys, "harvest", "-c", str(run.run_yaml))
    assert code == 0 and "+1 new" in out
    code, out, _ = cli(capsys, "status", str(run.root))
    assert code == 0 and ": 12 records" in out and "done              11" in out


def test_a_records_jsonl_spelling_a_lone_surrogate_is_read_with_u_fffd(tmp_path: Path, zenodo_with_records,
                                                                       capsys: pytest.CaptureFixture) -> None:
    """Another tool may write ``"\\ud800"`` (valid JSON, no character): every file made from the record must still be
    UTF-8 (the record's metadata, the image's card), so it reads as U+FFFD, as the harvest writes it."""
    cfg = run_config(tmp_path, zenodo_with_records)
    harvest(cfg, progress=False)
    run = open_run(cfg)
    lines = run.records.read_text().splitlines()
    hit = json.loads(lines[0])
    hit["metadata"]["title"] = "a \ud800 title"
    lines[0] = json.dumps(hit)  # ensure_ascii, as other tools write it: "\\ud800"
    run.records.write_text("\n".join(lines) + "\n")
    submit_pending(run, cfg, kind="debug")
    assert ids_in(run, "done") == ALL
    metadata = json.loads((run.data / "101" / "metadata_101.json").read_bytes().decode("utf-8"))
    assert metadata["hit"]["metadata"]["title"] == "a \ufffd title"
    assert cli(capsys, "pack", str(run.root))[0] == 0


# --- state/driver.lock -----------------------------------------------------------------------------


@pytest.mark.parametrize("junk", [b"\x00\xff garbage", b'{"junk": true}', b"[1, 2, 3]", b""])
def test_a_driver_lock_naming_no_driver_says_so_and_is_taken_over_once_a_minute_old(tmp_path: Path,
                                                                                     junk: bytes) -> None:
    """It was reported as held by ``(?, pid ? on ?, since ?)``, and other JSON was never taken over."""
    run = RunDir(tmp_path)
    lock = run.state / "driver.lock"
    lock.parent.mkdir(parents=True)
    lock.write_bytes(junk)
    with pytest.raises(UserError) as info, driver_lock(run, "resume"):
        pass
    message = str(info.value)
    assert message == (f"{lock} names no driver (unreadable, or being written this instant): it is taken over "
                       f"once it is a minute old; if no zenodo-hpc driver is working on {run.root}, remove it now: "
                       f"rm {lock}")
    old = time.time() - 120
    os.utime(lock, (old, old))
    with driver_lock(run, "resume"):
        assert json.loads(lock.read_text())["command"] == "resume"
    assert not lock.exists()


def test_a_run_directory_with_no_state_yet(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert next_generation(run) == 1 and generations(run) == [] and attempts_of(run, "1") == 0
    assert last_attempt_owner(run, "1") is None
    shutil.rmtree(tmp_path)
    assert next_generation(run) == 1


def test_a_local_worker_recorded_on_another_host_is_shown_as_such_and_its_records_planned_again(
        finished, capsys: pytest.CaptureFixture) -> None:
    run, _ = finished
    path = run.state / "submissions" / "0001.json"
    sub = json.loads(path.read_text())
    sub["kind"] = "local"  # as a local driver on another login node left it when it died
    sub["tasks"]["0"] = {"state": "RUNNING", "pid": 4242, "host": "another-host", "start": "x:1"}
    path.write_text(json.dumps(sub))
    shard_0 = json.loads((run.root / "plans" / "0001.json").read_text())["shards"][0]["ids"]
    (run.state / "done" / f"{shard_0[0]}.json").unlink()
    code, out, _ = cli(capsys, "status", str(run.root))
    assert code == 0 and "4 shards: 3 done, 1 running (1 on another-host: cannot be checked from here)" in out
    code, out, err = cli(capsys, "resume", "--dry-run", str(run.root))
    assert code == 0 and out.startswith("plan 2: 1 records")
    assert "plan 1, shard 0: its worker ran on another host and cannot be checked from here" in err


def test_the_names_an_image_may_not_have_are_the_run_directorys_own(tmp_path: Path) -> None:
    """config.py cannot ask RunDir (state.py imports the config): its list of the run directory's names must agree."""
    run = RunDir(tmp_path)
    own = (run.run_yaml, run.records, run.data, run.state, run.logs, run.plans, run.cache, run.releases)
    assert {path.relative_to(tmp_path).as_posix() for path in own} == set(RUN_DIR_ENTRIES)
