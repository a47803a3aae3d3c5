"""What the check before a release found (zenodo_hpc/dataset/verify.py): ``state/verify.json`` and its one line.

A module of its own so that ``status`` reads and shows it without importing what the check needs (h5py, numpy).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from typing import Any

from ..core.errors import UserError
from ..core.state import RunDir, read_json

SHOWN = 3  # records named in one line


@dataclass
class Check:
    """What one check found: ``state/verify.json``."""

    checked_at: str
    seconds: float = 0.0
    checked: int = 0  # done records whose files were checked against their done marker
    reverified: list[str] = field(default_factory=list)  # no done marker, folder whole: marker written anew
    damaged: dict[str, str] = field(default_factory=dict)  # id -> what was wrong: made again

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def last_check(run: RunDir) -> dict[str, Any] | None:
    """What the last check found (``state/verify.json``), None before the first; an unreadable one is None too."""
    with contextlib.suppress(UserError):
        found = read_json(run.verify)
        return found if isinstance(found, dict) else None
    return None


def format_check(check: Check | dict[str, Any]) -> str:
    """``check before the release (<time>): 9 done records checked in 0.1 s; 2 purged or damaged, made again
    (...); 1 re-verified, not made again (...)``: the line the check logs and ``status`` shows."""
    found = check.to_json() if isinstance(check, Check) else check
    damaged, reverified = found.get("damaged") or {}, found.get("reverified") or []
    text = f"check before the release ({found.get('checked_at')}): {found.get('checked', 0)} done records checked"
    text += f" in {found.get('seconds', 0):.1f} s"
    if damaged:
        shown = "; ".join(f"{i}: {p}" for i, p in sorted(damaged.items())[:SHOWN])
        more = f"; and {len(damaged) - SHOWN} more" if len(damaged) > SHOWN else ""
        text += f"; {len(damaged)} purged or damaged, made again ({shown}{more})"
    if reverified:
        more = f" and {len(reverified) - SHOWN} more" if len(reverified) > SHOWN else ""
        text += (f"; {len(reverified)} re-verified, not made again (done marker gone, files whole: "
                 f"{', '.join(reverified[:SHOWN])}{more})")
    if not damaged and not reverified:
        text += ": all whole"
    if damaged and "not_done_again" in found:  # status adds which of them are not done again yet
        left = found["not_done_again"]
        text += (f"; all {len(damaged)} done again" if not left else
                 f"; {len(left)} not done again yet ({', '.join(left[:SHOWN])}{' ...' if len(left) > SHOWN else ''})")
    return text


def check_for_status(run: RunDir, done_ids: set[str]) -> dict[str, Any] | None:
    """The last check for ``status``, with the records it sent back that are not done again yet."""
    found = last_check(run)
    if found is not None:
        found["not_done_again"] = sorted(set(found.get("damaged") or {}) - done_ids)
    return found
