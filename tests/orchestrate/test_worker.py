"""The shard worker (zenodo_hpc/orchestrate/worker.py): what stops a record, and what never stops the shard."""

from __future__ import annotations

import json
import os
import resource
import signal
from pathlib import Path

from doubles import ZenodoDouble
from helpers import run_config

from zenodo_hpc.core.state import attempts_of, iter_records, open_run, read_failure
from zenodo_hpc.orchestrate.worker import make_client, process_record
from zenodo_hpc.zenodo.harvest import harvest

LIMIT = 4096  # bytes a file may reach in the child: the attempts file is already that long, as on a full disk


def test_a_full_disk_when_counting_the_attempt_is_a_clean_disk_full_failure(tmp_path: Path,
                                                                          zenodo_with_records) -> None:
    """The attempt line is the worker's first write: a full disk there used to end the task in an OSError traceback."""
    cfg = run_config(tmp_path, zenodo_with_records)
    harvest(cfg, progress=False)
    run = open_run(cfg)
    hit = next(iter_records(run.records))
    attempts = run.state / "attempts" / str(hit["id"])
    attempts.parent.mkdir(parents=True, exist_ok=True)
    attempts.write_bytes(b"#\n" * (LIMIT // 2))  # not attempt lines: they count for nothing
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # a child whose files cannot grow past LIMIT bytes (EFBIG, as a full disk gives ENOSPC)
        code = 1
        try:
            os.close(reader)
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))
            outcome = process_record(hit, run, cfg, make_client(cfg), task="g0001-s00000", tmp_root=tmp_path)
            os.write(writer, json.dumps([outcome.status, outcome.reason, outcome.message]).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        answer = pipe.read()
    assert os.waitpid(pid, 0)[1] == 0 and answer, "the worker raised instead of failing the record"
    status, reason, message = json.loads(answer)
    assert (status, reason) == ("failed", "disk_full")
    assert message.startswith(f"cannot count the attempt in {run.state / 'attempts'}: File too large")
    assert attempts_of(run, str(hit["id"])) == 0 and read_failure(run, str(hit["id"])).reason == "disk_full"
    attempts.unlink()  # space freed: the record is made as if nothing happened
    assert process_record(hit, run, cfg, make_client(cfg), tmp_root=tmp_path).status == "done"


def test_a_record_whose_only_file_has_a_bad_name_is_quarantined_at_once(tmp_path: Path,
                                                                       zenodo_with_records) -> None:
    """No retry changes a file's name: ``bad_name`` is final, like ``bad_link`` (it used to take every round)."""
    cfg = run_config(tmp_path, zenodo_with_records)
    run = open_run(cfg)
    hit = ZenodoDouble.make_hit(7000001, created="2016-01-01")
    hit["files"] = [{"key": "../evil.py", "size": 3, "checksum": "md5:" + "0" * 32,
                     "links": {"self": f"{zenodo_with_records.api_url}/records/7000001/files/evil.py/content"}}]
    outcome = process_record(hit, run, cfg, make_client(cfg), tmp_root=tmp_path)
    assert (outcome.status, outcome.reason) == ("quarantined", "bad_name")
    assert read_failure(run, "7000001").quarantined and attempts_of(run, "7000001") == 1
    assert not [r for r in zenodo_with_records.requests if "evil" in r.path]  # nothing was asked of the server
