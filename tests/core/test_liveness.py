"""Liveness (zenodo_hpc/core/liveness.py): a live process, a dead one, a reused pid, a zombie, another host."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from zenodo_hpc.core.liveness import (
    ALIVE,
    ELSEWHERE,
    GONE,
    LOST,
    UNCHECKABLE,
    identity,
    local_task_state,
    owner_token,
    parse_owner_token,
    process_state,
)


def test_liveness_tells_a_live_process_from_a_dead_one_and_a_reused_pid() -> None:
    me = identity()
    assert process_state(me) == ALIVE and parse_owner_token(owner_token()) == me
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    who = identity(child.pid)
    assert process_state(who) == ALIVE
    assert process_state({**who, "start": "another-boot:1"}) == GONE  # the pid now names another process
    child.send_signal(signal.SIGKILL)
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # dead, not yet reaped: a zombie
    assert process_state(who) == GONE
    child.wait()
    assert process_state(who) == GONE
    assert process_state({**me, "host": "another-host"}) == ELSEWHERE


def test_a_local_task_recorded_running_is_lost_once_its_worker_is_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    task = {"state": "RUNNING", **identity(child.pid)}
    assert local_task_state(task) == "RUNNING"
    assert local_task_state({**task, "host": "another-host"}) == UNCHECKABLE
    child.kill()
    child.wait()
    assert local_task_state(task) == LOST
    assert local_task_state({"state": "COMPLETED", "exit": 0}) == "COMPLETED"
