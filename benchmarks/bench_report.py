"""`zenodo-hpc report` on a run directory of 10,000 records (target: well under a minute).

A synthetic run, written the way the pipeline writes it: 24 real record folders made by `process_path`
from packages of the standard library serve as templates; each of the 10,000 records gets a folder of its
own (the template's h5 hard-linked, its metadata JSON and pickle written with the record's own hit and
source), a done marker with its task, seconds, stats and each file's sha256, attempt lines, and its
place in a plan of 200 shards run over about three simulated hours by 8 local tasks at a time; 2% fail
(half of them quarantined at once), a second plan retries the rest with escalated memory, and the last
3% are pending. Measured: the command in a fresh interpreter (what an operator waits for, matplotlib's
import included), and in-process the reading of the run directory and the figures for the dataset card.

    python benchmarks/bench_report.py [--records 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from _common import machine_line, stdlib_root

from zenodo_hpc.core.config import config_from_dict
from zenodo_hpc.core.liveness import owner_token
from zenodo_hpc.core.state import (
    RunDir,
    atomic_write_json,
    mark_failed,
    open_run,
    record_digests,
)
from zenodo_hpc.orchestrate.executor import Submission, save_submission
from zenodo_hpc.orchestrate.plan import Plan, Shard, scan_records, write_plan
from zenodo_hpc.record.process import process_path
from zenodo_hpc.record.store import images_h5_name, metadata_json_name, metadata_pkl_name, metadata_to_json

TEMPLATES = 24
PER_SHARD = 50
PARALLEL = 8
LICENSES = ("mit", "apache-2.0", "gpl-3.0-or-later", "bsd-3-clause", "cc-by-4.0", "other-open", "lgpl-3.0")
START = datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc)


def stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S%z")


def templates(folder: Path, cfg) -> list[dict]:
    """Real record folders of stdlib packages (largest first), each as (folder, metadata)."""
    packages = sorted((p for p in stdlib_root().iterdir() if p.is_dir() and (p / "__init__.py").exists()
                       and p.name not in {"test", "site-packages", "idlelib"}),
                      key=lambda p: -sum(f.stat().st_size for f in p.rglob("*.py")))[:TEMPLATES]
    out = []
    for i, package in enumerate(packages):
        result = process_path(package, folder, cfg, record_id=f"t{i}")
        made = result.written.folder
        out.append({"folder": made, "meta": json.loads((made / metadata_json_name(f"t{i}")).read_text()),
                    "id": f"t{i}"})
    return out


def hit(record_id: int, rng: random.Random) -> dict:
    created = datetime(2014, 1, 1, tzinfo=timezone.utc) + timedelta(days=rng.randrange(0, 11 * 365))
    key = f"code-{record_id}.zip"
    return {"id": record_id, "doi": f"10.5281/zenodo.{record_id}", "created": created.isoformat(),
            "metadata": {"title": f"synthetic record {record_id}", "resource_type": {"type": "software"},
                         "access_right": "open", "license": {"id": rng.choice(LICENSES)}},
            "files": [{"key": key, "size": int(rng.lognormvariate(12, 1.5)), "checksum": "md5:" + "0" * 32,
                       "links": {"self": f"https://zenodo.org/api/records/{record_id}/files/{key}/content"}}]}


def make_run(root: Path, n: int) -> RunDir:
    rng = random.Random(7)
    cfg = config_from_dict({"run": {"scratch": str(root), "name": "bench"},
                            "executor": {"kind": "local", "records_per_shard": PER_SHARD, "max_attempts": 3}})
    run = open_run(cfg)
    hits = [hit(5_000_000 + i, rng) for i in range(n)]
    with open(run.records, "w") as handle:
        handle.writelines(json.dumps(h, separators=(",", ":")) + "\n" for h in hits)
    offsets = {ref.id: ref.offset for ref in scan_records(run.records)}
    ids = [str(h["id"]) for h in hits]
    planned = ids[: int(n * 0.97)]  # the rest: harvested since, pending
    shards = [Shard(s, planned[i:i + PER_SHARD], [offsets[r] for r in planned[i:i + PER_SHARD]])
              for s, i in enumerate(range(0, len(planned), PER_SHARD))]
    write_plan(run, Plan(1, shards))
    save_submission(run, Submission(1, "local", PARALLEL, submitted_at=stamp(START),
                                    tasks={str(s.index): {"state": "COMPLETED", "exit": 0} for s in shards}))
    cfg_process = config_from_dict({})
    models = templates(root / "templates", cfg_process)
    by_id = {str(h["id"]): h for h in hits}
    owner = owner_token()
    retry: list[str] = []
    slots = [START] * PARALLEL
    for shard in shards:
        slot = min(range(PARALLEL), key=lambda k: slots[k])
        clock = slots[slot]
        task = f"g0001-s{shard.index:05d}"
        for record_id in shard.ids:
            seconds = rng.lognormvariate(2.0, 0.8)  # about 10 s a record: 8 tasks stay near the budget of 60/min
            (run.state / "attempts").mkdir(parents=True, exist_ok=True)
            (run.state / "attempts" / record_id).write_text(f"{stamp(clock)}\t{task}\t{owner}\n")
            clock += timedelta(seconds=seconds)
            number = int(record_id)
            if number % 50 == 7:  # fails: half quarantined at once (404), half to retry (503)
                gone = number % 100 == 7
                failure = mark_failed(run, record_id, reason="http_404" if gone else "http_503",
                                      message="synthetic", attempt=1, task=task, quarantined=gone)
                failure.history[-1]["at"] = stamp(clock)  # when it happened in the simulated run
                atomic_write_json(run.state / "failed" / f"{record_id}.json", failure.to_json())
                if not gone:
                    retry.append(record_id)
                continue
            write_record(run, record_id, by_id[record_id], models[number % len(models)])
            atomic_write_json(run.state / "done" / f"{record_id}.json", {
                "id": record_id, "finished": stamp(clock), "attempts": 1, "task": task, "seconds": round(seconds, 3),
                "source": "zenodo", "bytes_written": 0, **models[number % len(models)]["meta"]["stats"],
                "outputs": record_digests(run.record_folder(record_id))})
            os.utime(run.state / "done" / f"{record_id}.json", (clock.timestamp(), clock.timestamp()))
        slots[slot] = clock
    write_plan(run, Plan(2, [Shard(i, retry[i * 5:i * 5 + 5], [offsets[r] for r in retry[i * 5:i * 5 + 5]], mem_gb=8)
                             for i in range((len(retry) + 4) // 5)]))
    return run


def write_record(run: RunDir, record_id: str, record_hit: dict, model: dict) -> None:
    folder = run.record_folder(record_id)
    folder.mkdir(parents=True)
    os.link(model["folder"] / images_h5_name(model["id"]), folder / images_h5_name(record_id))
    key = record_hit["files"][0]["key"]
    meta = {**model["meta"], "hit": record_hit,
            "source": {"kind": "zenodo", "url": record_hit["files"][0]["links"]["self"],
                       "archives": [{"kind": "zenodo", "name": key, "url": record_hit["files"][0]["links"]["self"],
                                     "size": record_hit["files"][0]["size"], "md5": "0" * 32,
                                     "checksum": "verified"}],
                       "loose": [], "not_fetched": [], "fallback_reason": None}}
    (folder / metadata_json_name(record_id)).write_text(metadata_to_json(meta), encoding="utf-8")
    (folder / metadata_pkl_name(record_id)).write_bytes(pickle.dumps(meta, protocol=4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=10_000)
    args = parser.parse_args()
    print(machine_line())
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        started = time.perf_counter()
        run = make_run(Path(tmp), args.records)
        print(f"synthetic run of {args.records:,} records written in {time.perf_counter() - started:.1f} s")
        command = [sys.executable, "-m", "zenodo_hpc", "report", str(run.root), "--out", f"{tmp}/report.html"]
        for attempt in ("first", "second"):
            started = time.perf_counter()
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()
            print(f"zenodo-hpc report ({attempt} run, fresh interpreter): {time.perf_counter() - started:.1f} s")
        print(f"  {out}")

        from zenodo_hpc.core.state import load_run
        from zenodo_hpc.report import write_report_figures
        from zenodo_hpc.report.collect import collect

        run, cfg = load_run(run.root)
        started = time.perf_counter()
        facts = collect(run, cfg)
        print(f"in-process: reading the run directory {time.perf_counter() - started:.1f} s "
              f"({facts.done_read:,} metadata files, {len(facts.tasks)} tasks)")
        started = time.perf_counter()
        figures = write_report_figures(run, Path(tmp) / "figures", cfg)
        print(f"in-process: {len(figures)} figures for the dataset card in {time.perf_counter() - started:.1f} s "
              f"({sum(p.stat().st_size for p in figures) / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
