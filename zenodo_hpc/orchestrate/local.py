"""The executors that run the shards on this machine: ``local`` (one worker process a shard) and ``debug`` (in this
process, one after the other). Both run the shards to the end before returning, so ``submit`` with them is the
whole run; the interface they fulfil, and ``Submission``, are in executor.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from ..core.config import Config
from ..core.liveness import identity
from ..core.state import RunDir
from .executor import Submission, TaskGroup, _now, save_submission
from .plan import Plan


class LocalExecutor:
    """``local.workers`` worker processes on this machine (default: the CPU count), same markers and logs.

    Each shard is its own ``python -m zenodo_hpc.orchestrate.worker`` process, so a crash (a poison record, the OOM
    killer, ``kill -9``) takes down one shard, not the pool; its exit status is recorded like a SLURM state.
    """

    kind = "local"
    blocking = True

    def __init__(self, cfg: Config) -> None:
        self.workers = cfg.executor.local.workers or os.cpu_count() or 1

    def concurrency(self, plan: Plan) -> int:
        return max(1, min(self.workers, len(plan.shards)))

    def command(self, run: RunDir, generation: int, shard: int, concurrent: int) -> list[str]:
        return [sys.executable, "-m", "zenodo_hpc.orchestrate.worker", str(run.root.resolve()), str(generation),
                str(shard), "--concurrent", str(concurrent)]

    def describe(self, run: RunDir, plan: Plan, groups: list[TaskGroup]) -> str:
        concurrent = self.concurrency(plan)
        shards = [s for g in groups for s in g.shards]
        lines = [f"# {len(shards)} worker processes, {concurrent} at a time, on this machine:"]
        lines += [" ".join(self.command(run, plan.generation, s, concurrent)) for s in shards[:3]]
        if len(shards) > 3:
            lines.append(f"# ... and {len(shards) - 3} more")
        return "\n".join(lines)

    def submit(self, run: RunDir, plan: Plan, groups: list[TaskGroup]) -> Submission:
        concurrent = self.concurrency(plan)
        submission = Submission(plan.generation, self.kind, concurrent, submitted_at=_now())
        pending = [s for g in groups for s in g.shards]
        running: dict[int, tuple[subprocess.Popen[bytes], Any]] = {}
        save_submission(run, submission)
        try:
            while pending or running:
                started = False
                while pending and len(running) < concurrent:
                    shard = pending.pop(0)
                    running[shard] = self._start(run, plan.generation, shard, concurrent)
                    # who runs it, so that readers can tell a live worker from one that died with its driver
                    submission.tasks[str(shard)] = {"state": "RUNNING", **identity(running[shard][0].pid)}
                    started = True
                if started:
                    save_submission(run, submission)
                finished = [s for s, (proc, _) in running.items() if proc.poll() is not None]
                for shard in finished:
                    proc, stream = running.pop(shard)
                    stream.close()
                    submission.tasks[str(shard)] = {"state": exit_state(proc.returncode), "exit": proc.returncode}
                if finished:
                    save_submission(run, submission)
                else:
                    time.sleep(0.2)
        finally:
            for shard, (proc, stream) in running.items():  # Ctrl-C: stop the workers, say so
                proc.terminate()
                proc.wait()
                stream.close()
                submission.tasks[str(shard)] = {"state": "CANCELLED", "exit": proc.returncode}
            save_submission(run, submission)
        return submission

    def _start(self, run: RunDir, generation: int, shard: int, concurrent: int) -> tuple[Any, Any]:
        out = run.task_output(generation, shard)
        out.parent.mkdir(parents=True, exist_ok=True)
        stream = open(out, "ab")  # noqa: SIM115 - closed when the process ends
        proc = subprocess.Popen(self.command(run, generation, shard, concurrent), stdout=stream,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return proc, stream


def exit_state(code: int | None) -> str:
    """A local exit status in SLURM's words: 0 COMPLETED, killed by a signal KILLED, else FAILED."""
    if code == 0:
        return "COMPLETED"
    if code is not None and code < 0:
        return "KILLED"
    return "FAILED"


class DebugExecutor:
    """Every shard in this process, one after the other: breakpoints and pdb work."""

    kind = "debug"
    blocking = True

    def __init__(self, task: Callable[[str, int, int, int], Any]) -> None:
        """``task(run_dir, generation, shard, concurrent)`` runs one shard (``submit.make_executor`` hands in the
        worker's ``run_shard``): executors run the stages, they do not import them."""
        self.task = task

    def describe(self, run: RunDir, plan: Plan, groups: list[TaskGroup]) -> str:
        shards = [s for g in groups for s in g.shards]
        return f"# {len(shards)} shards run one after the other in this process (debug)"

    def submit(self, run: RunDir, plan: Plan, groups: list[TaskGroup]) -> Submission:
        submission = Submission(plan.generation, self.kind, 1, submitted_at=_now())
        for group in groups:
            for shard in group.shards:
                self.task(str(run.root), plan.generation, shard, 1)
                submission.tasks[str(shard)] = {"state": "COMPLETED", "exit": 0}
                save_submission(run, submission)
        save_submission(run, submission)
        return submission
