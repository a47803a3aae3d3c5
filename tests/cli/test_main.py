"""The command line as a whole (zenodo_hpc/cli/main.py and options.py): the lazy command table, one-line errors
and a traceback only with --debug, what each command imports, the internal commands, every flag documented.
Each command's own behaviour is tested with its stage (tests/<stage>/); `process`'s in tests/cli/test_process.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import assert_one_line_error
from helpers import run_cli as run

from zenodo_hpc.cli import main


def test_every_command_and_flag_is_in_the_docs() -> None:
    import argparse

    from zenodo_hpc.cli import build_parser

    doc = (Path(__file__).resolve().parents[2] / "docs" / "commands.md").read_text()
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        assert f"## `zenodo-hpc {name}" in doc, f"command {name} has no section in docs/commands.md"
        nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        parsers = list(nested[0].choices.values()) if nested else [sub]  # `publish kaggle`
        for each in parsers:
            for action in each._actions:
                for flag in action.option_strings:
                    if flag not in ("-h", "--help"):
                        assert f"`{flag}" in doc or f" {flag} " in doc, f"{name} {flag} is not in docs/commands.md"


def test_a_bug_is_one_line_without_debug_and_a_traceback_with_it(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # A bug cannot be made on purpose in real code: this one is planted in the process command.
    import zenodo_hpc.record.process as process

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("planted bug")

    monkeypatch.setattr(process, "process_path", broken)
    code, _, err = run("process", str(tmp_path), "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "internal error: RuntimeError: planted bug (run again with --debug")
    with pytest.raises(RuntimeError, match="planted bug"):
        main(["--debug", "process", str(tmp_path), "--out", str(tmp_path / "o")])


# --- a quick command line: what each command imports -------------------------------------------------------

HEAVY = ("h5py", "numpy", "requests", "submitit")  # ~250 ms of imports that --help and status do not need

_REPORT_IMPORTS = """
import json, sys
from zenodo_hpc.cli import main
try:
    code = main(json.loads(sys.argv[1]))
except SystemExit as exc:
    code = exc.code or 0
heavy = sorted({name.split(".")[0] for name in sys.modules} & set(json.loads(sys.argv[2])))
print("\\nexit", code, "heavy", json.dumps(heavy), file=sys.stderr)
"""


def heavy_imports(*argv: str, env: dict[str, str] | None = None) -> tuple[int, list[str], str]:
    """Run the command line in a fresh interpreter: its exit code, the heavy modules it imported, its stdout."""
    proc = subprocess.run([sys.executable, "-c", _REPORT_IMPORTS, json.dumps(argv), json.dumps(HEAVY)],
                          capture_output=True, text=True, env=env, check=False, timeout=120)
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("exit "), proc.stderr
    _, code, _, heavy = last.split(" ", 3)
    return int(code), json.loads(heavy), proc.stdout


def test_the_probe_sees_heavy_imports(tmp_path: Path) -> None:
    """The checks below can fail: a command that needs numpy and h5py (rasterizing, writing h5) is seen loading
    them, and its --help is not."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("a = 1\n")
    code, heavy, _ = heavy_imports("process", str(tmp_path / "src"), "--out", str(tmp_path / "out"))
    assert code == 0 and {"numpy", "h5py"} <= set(heavy)
    code, heavy, _ = heavy_imports("process", "--help")
    assert code == 0 and heavy == []


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["status", "--help"], ["pack", "--help"]])
def test_help_and_version_import_nothing_heavy(argv: list[str]) -> None:
    code, heavy, out = heavy_imports(*argv)
    assert code == 0 and out.strip()
    assert heavy == [], f"zenodo-hpc {' '.join(argv)} imported {heavy}"


def _synthetic_run(tmp_path: Path, kind: str) -> Path:
    """A harvested, planned run of 6 records in 3 shards (no record processed), with nothing submitted yet."""
    from zenodo_hpc.core.config import config_from_dict
    from zenodo_hpc.core.state import append_records, open_run
    from zenodo_hpc.orchestrate.plan import write_plan
    from zenodo_hpc.orchestrate.submit import plan_groups, take_snapshot

    cfg = config_from_dict({"run": {"scratch": str(tmp_path), "name": "run"},
                            "executor": {"kind": kind, "records_per_shard": 2}})
    run = open_run(cfg)
    append_records(run.records, [{"id": 100 + i, "doi": f"10.5281/zenodo.{100 + i}", "metadata": {"title": "t"},
                                  "files": [{"key": f"r{i}.zip", "size": 1000, "checksum": "md5:" + "0" * 32,
                                             "links": {"self": f"https://zenodo.org/r{i}.zip"}}]}
                                 for i in range(6)])
    snapshot = take_snapshot(run, cfg)
    plan, _ = plan_groups(snapshot.pending(), snapshot, cfg, 1)
    write_plan(run, plan)
    return run.root


def test_status_of_a_local_run_imports_nothing_heavy(tmp_path: Path) -> None:
    from zenodo_hpc.core.state import RunDir
    from zenodo_hpc.orchestrate.executor import Submission, save_submission

    root = _synthetic_run(tmp_path, "local")
    save_submission(RunDir(root), Submission(1, "local", 1, tasks={"0": {"state": "COMPLETED", "exit": 0}}))
    code, heavy, out = heavy_imports("status", str(root))
    assert code == 0 and "6 records" in out and "plan 1 [local]" in out
    assert heavy == []


def test_status_of_a_slurm_run_reads_sacct_and_imports_nothing_heavy(tmp_path: Path) -> None:
    """Task states come from sacct (here a stand-in printing output recorded on the dev cluster) without
    submitit, requests, numpy or h5py."""
    from zenodo_hpc.core.state import RunDir
    from zenodo_hpc.orchestrate.executor import Submission, save_submission

    root = _synthetic_run(tmp_path, "slurm")
    save_submission(RunDir(root), Submission(1, "slurm", 3, submitted_at="2026-11-29T10:00:00+0000", arrays=[
        {"job_id": "87", "task_ids": ["87_0", "87_1", "87_10"], "shards": [0, 1, 2],
         "resources": {"mem_gb": 4, "time_min": 60}}]))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    recorded = Path(__file__).parents[1] / "data" / "sacct_oom_22.05.txt"
    (bin_dir / "sacct").write_text(f"#!/bin/sh\ngrep -v '^#' {recorded}\n")
    (bin_dir / "squeue").write_text("#!/bin/sh\nexit 0\n")  # nothing queued any more
    for script in bin_dir.iterdir():
        script.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    code, heavy, out = heavy_imports("status", str(root), env=env)
    assert code == 0 and "OUT_OF_MEMORY" in out, out
    assert heavy == []


# --- the command table: lazy, and the internal commands -----------------------------------------------------

_REPORT_MODULES = """
import json, sys
from zenodo_hpc.cli import main
try:
    main(json.loads(sys.argv[1]))
except SystemExit:
    pass
print(json.dumps(sorted(name for name in sys.modules if name.startswith("zenodo_hpc."))))
"""


def zenodo_hpc_modules(*argv: str) -> set[str]:
    """The package's modules a command line imports, in a fresh interpreter."""
    proc = subprocess.run([sys.executable, "-c", _REPORT_MODULES, json.dumps(argv)], capture_output=True, text=True,
                          check=True, timeout=120)
    return set(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_help_imports_no_command_module_and_a_command_only_its_own() -> None:
    commands = {"zenodo_hpc.cli.run", "zenodo_hpc.cli.status", "zenodo_hpc.cli.export", "zenodo_hpc.cli.update"}
    listed = zenodo_hpc_modules("--help")
    assert not listed & commands and "zenodo_hpc.dataset.organize" not in listed
    status = zenodo_hpc_modules("status", "--help")
    assert status & commands == {"zenodo_hpc.cli.status"}


def test_the_internal_commands_are_not_listed() -> None:
    code, out, _ = run("--help")
    assert code == 0 and "worker" not in out and "tick" not in out
    code, _, err = run("nope")  # nor offered for a mistyped command
    assert code == 2 and "invalid choice: 'nope'" in err and "'process'" in err
    assert "'worker'" not in err and "'tick'" not in err


@pytest.mark.parametrize("argv, message", [
    (["-m", "zenodo_hpc.orchestrate.worker", "{missing}", "1", "0"], "zenodo-hpc worker: error: {missing} is not"),
    (["-m", "zenodo_hpc", "worker", "{missing}", "1", "0"], "zenodo-hpc worker: error: {missing} is not"),
    (["-m", "zenodo_hpc.drivers.schedule", "tick", "-c", "{missing}.yaml", "--every", "month"],
     "config file {missing}.yaml does not exist"),
])
def test_the_entry_points_the_package_starts_still_run(tmp_path: Path, argv: list[str], message: str) -> None:
    """What the local executor starts (orchestrate/local.py) and what a schedule's job runs (jobs queued by earlier
    versions too) reach the worker and the scheduled update: here a missing run or config, status 1."""
    missing = str(tmp_path / "missing")
    proc = subprocess.run([sys.executable, *[a.format(missing=missing) for a in argv]], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 1 and message.format(missing=missing) in proc.stderr, proc.stderr
