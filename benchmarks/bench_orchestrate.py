"""Orchestration at scale: plan + dry-run submit of 10,000 and 1,000,000 records; status of 10,000 done.

Synthetic records (realistic hit shape, random file sizes) are written to a real run directory. Each
size runs in a fresh subprocess so that its peak memory (ru_maxrss) is its own. Reported: wall time of
scan + plan + the dry-run submission (sbatch script included), peak memory, and the number of sbatch
calls with MaxArraySize 1001, against the 2018 driver in the same run (one sbatch per record: its
slurm/submit.py looped over records). Targets: 10,000 in < 5 s with <= ceil(shards / 1001) sbatch calls;
1,000,000 in < 60 s and < 1 GB; status of 10,000 completed records in < 1 s.

    python benchmarks/bench_orchestrate.py [--sizes 10000 1000000]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine_line

from zenodo_hpc.core.config import config_from_dict
from zenodo_hpc.core.state import RunDir, atomic_write_json, open_run
from zenodo_hpc.orchestrate.executor import Submission, save_submission
from zenodo_hpc.orchestrate.plan import write_plan
from zenodo_hpc.orchestrate.slurm import SlurmExecutor
from zenodo_hpc.orchestrate.status import gather_status
from zenodo_hpc.orchestrate.submit import plan_groups, take_snapshot


def write_records(path: Path, n: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    with open(path, "w") as handle:
        for i in range(n):
            size = int(rng.lognormvariate(12, 1.5))
            hit = {"id": 1_000_000 + i, "doi": f"10.5281/zenodo.{1_000_000 + i}", "created": "2018-01-01",
                   "metadata": {"title": f"record {i}", "resource_type": {"type": "software"}},
                   "files": [{"key": f"r{i}.zip", "size": size, "checksum": "md5:" + "0" * 32,
                              "links": {"self": f"https://zenodo.org/api/records/{i}/files/r{i}.zip/content"}}]}
            handle.write(json.dumps(hit, separators=(",", ":")) + "\n")


def config(root: Path):
    return config_from_dict({"run": {"scratch": str(root), "name": "bench"},
                             "executor": {"kind": "slurm", "records_per_shard": 50}})


def measure_plan(n: int) -> dict:
    """Child process: scan + plan + dry-run submit of n records; wall time and peak memory."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(Path(tmp))
        run = open_run(cfg)
        write_records(run.records, n)
        started = time.perf_counter()
        snapshot = take_snapshot(run, cfg)
        plan, groups = plan_groups(snapshot.pending(), snapshot, cfg, 1)
        executor = SlurmExecutor(cfg, max_array=1001)
        script = executor.describe(run, plan, groups)
        write_plan(run, plan)
        seconds = time.perf_counter() - started
        calls = len(executor.arrays(groups))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"records": n, "shards": len(plan.shards), "seconds": seconds, "peak_mb": peak_mb,
            "sbatch_calls": calls, "script_lines": script.count("\n")}


def measure_status(n: int) -> dict:
    """A run directory with n completed records (markers, plan, submission); time of `status`."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(Path(tmp))
        run = open_run(cfg)
        write_records(run.records, n)
        snapshot = take_snapshot(run, cfg)
        plan, _ = plan_groups(snapshot.pending(), snapshot, cfg, 1)
        write_plan(run, plan)
        save_submission(run, Submission(1, "local", 4, tasks={str(s.index): {"state": "COMPLETED", "exit": 0}
                                                              for s in plan.shards}))
        for ref in snapshot.records:
            atomic_write_json(run.state / "done" / f"{ref.id}.json", {"id": ref.id, "segments": 10})
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            status = gather_status(RunDir(run.root))
            timings.append(time.perf_counter() - started)
        assert status.done == n
    return {"records": n, "seconds": min(timings)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_plan(args.child)))
        return
    print(machine_line())
    for n in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--child", str(n)], capture_output=True, text=True,
                             check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        target_calls = math.ceil(r["shards"] / 1001)
        print(f"{n:>9,} records -> {r['shards']:,} shards: plan + dry-run submit {r['seconds']:.2f} s, "
              f"peak {r['peak_mb']:.0f} MB, {r['sbatch_calls']} sbatch call(s) (target <= {target_calls}); "
              f"2018 driver: {n:,} sbatch calls")
    s = measure_status(10_000)
    print(f"status of {s['records']:,} completed records: {s['seconds'] * 1000:.0f} ms (best of 3; target < 1 s)")


if __name__ == "__main__":
    main()
