"""Is the process that wrote something into the run directory still alive? Only its own host can tell.

A pid alone is not enough: once a process is gone its pid is handed to another one, so a dead local
worker could pass for a live one, or a new process inherit an old worker's folders. A process is named
here by its host, its pid and its start token (the boot id and the start time in clock ticks from
``/proc/<pid>/stat``), which no later process on that host shares. Local task records in
``state/submissions/``, attempt lines in ``state/attempts/`` and the owner file of a worker's temporary
folder all carry this identity, and this module alone decides from it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from functools import cache
from pathlib import Path
from typing import Any

ALIVE = "alive"
GONE = "gone"
ELSEWHERE = "elsewhere"  # on another host: nobody here can say

LOST = "LOST"  # a local task recorded as running whose process is gone: its driver did not see it end
UNCHECKABLE = "UNCHECKABLE"  # a local task recorded as running on another host
LOCAL_ACTIVE = ("RUNNING",)  # a local task whose records resume leaves alone: its worker lives, here


@cache
def this_host() -> str:
    return socket.gethostname()


@cache
def _boot_id() -> str:
    """This boot of the machine: start times in clock ticks restart at every boot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "?"


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first); None when there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    return text[text.rfind(")") + 2:].split()  # the command name may hold spaces and parentheses


def process_start(pid: int) -> str | None:
    """The start token of a running process (``<boot id>:<start ticks>``); None when there is no such process
    or no ``/proc`` to ask."""
    return _start_token(_proc_stat(pid))


def _start_token(fields: list[str] | None) -> str | None:
    if fields is None or len(fields) < 20:
        return None
    return f"{_boot_id()}:{fields[19]}"


def identity(pid: int | None = None) -> dict[str, Any]:
    """``{"pid", "host", "start"}`` of a process of this host (this one by default)."""
    pid = os.getpid() if pid is None else pid
    return {"pid": pid, "host": this_host(), "start": process_start(pid)}


def owner_token(pid: int | None = None) -> str:
    """The same identity on one line: ``<host> <pid> <start>`` (for the attempt lines)."""
    who = identity(pid)
    return f"{who['host']} {who['pid']} {who['start'] or '-'}"


def parse_owner_token(text: str) -> dict[str, Any] | None:
    """The identity written by :func:`owner_token`; None for anything else."""
    parts = text.split()
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return {"host": parts[0], "pid": int(parts[1]), "start": None if parts[2] == "-" else parts[2]}


def process_state(who: dict[str, Any]) -> str:
    """ALIVE, GONE, or ELSEWHERE (another host) for an identity from :func:`identity`.

    Without a recorded host (files of older versions) the process is looked for on this host; without a
    start token a process with that pid counts as alive, since a reused pid cannot be told apart then.
    """
    host = who.get("host")
    if host and host != this_host():
        return ELSEWHERE
    try:
        pid = int(who.get("pid"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return GONE
    if pid <= 0:
        return GONE
    fields = _proc_stat(pid)
    if fields is not None:
        if fields[0] in ("Z", "X"):  # exited, not yet reaped by its parent
            return GONE
        start = who.get("start")
        return ALIVE if not start or start == _start_token(fields) else GONE
    return _exists_without_proc(pid)


def _exists_without_proc(pid: int) -> str:
    """Where ``/proc`` says nothing (no such process, another user's hidden by ``hidepid``, not Linux): ask the
    kernel whether the pid exists. Another user's process counts as alive: its start cannot be compared."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return GONE
    except PermissionError:
        return ALIVE
    return ALIVE


def local_task_state(task: dict[str, Any]) -> str:
    """A local task's state as recorded, unless it says RUNNING: then RUNNING only while its worker lives,
    LOST once it is gone (its driver was killed before it could record the end), UNCHECKABLE on another host."""
    state = str(task.get("state", "UNKNOWN"))
    if state != "RUNNING" or "pid" not in task:
        return state
    verdict = process_state(task)
    if verdict == ALIVE:
        return "RUNNING"
    return LOST if verdict == GONE else UNCHECKABLE


def is_dead(who: dict[str, Any] | None) -> bool:
    """True only when ``who`` is known to be gone: anything that cannot be checked counts as alive."""
    return bool(who) and process_state(who) == GONE  # type: ignore[arg-type]


def read_owner(path: Path) -> dict[str, Any] | None:
    """An owner file (one JSON identity), or None when missing or unreadable."""
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "pid" in data:
            return data
    return None
