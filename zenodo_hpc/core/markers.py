"""A record's markers as types that read and write themselves: ``state/done/<id>.json`` and ``state/failed/<id>.json``.

Where they live is :class:`~zenodo_hpc.core.state.RunDir`'s business; this module says what they hold. Both are
JSON objects written with sorted keys (core/state.py's ``atomic_write_json``), so the order of keys is no part
of the format. Reading is as tolerant as it always was: a key of an unexpected type reads as missing, and a
key this version does not know is kept. A done marker read and written back is the same object, whatever it
holds (the check before a release keeps a purged record's marker as it found it).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

UNREADABLE_MARKER = "unreadable_marker"  # the reason of a failure marker that cannot be read
HISTORY_KEPT = 20  # a failure marker keeps the last 20 failures of its record


def _split(data: dict[str, Any], types: dict[str, tuple[type, ...]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``data``'s keys that ``types`` types (with a value of their type), and every other key as it is."""
    typed, extra = {}, {}
    for key, value in data.items():
        if key in types and isinstance(value, types[key]):
            typed[key] = value
        else:
            extra[key] = value
    return typed, extra


@dataclass
class DoneMarker:
    """``state/done/<id>.json``: the record is complete (written after its folder is in place).

    Besides the keys typed here it holds the record's stats (``segments``, files skipped by reason, ...), where
    its archive came from (``source``), or who wrote it anew (``repaired_by``, ``repaired_because``): ``extra``.
    """

    id: str
    finished: str | None = None  # local time, ``2026-12-07T14:05:12+0000``
    task: str | None = None  # the worker's task, ``g0002-s00017 (job 123_17)``
    attempts: int | None = None
    seconds: float | None = None
    bytes_written: int | None = None
    outputs: dict[str, Any] | None = None  # file name -> {"size", "sha256"}: what pack checks the folder against
    extra: dict[str, Any] = field(default_factory=dict)

    _TYPES: ClassVar[dict[str, tuple[type, ...]]] = {
        "id": (str,), "finished": (str,), "task": (str,), "attempts": (int,), "seconds": (int, float),
        "bytes_written": (int,), "outputs": (dict,)}

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)
               if f.name != "extra" and getattr(self, f.name) is not None}
        return {**out, **self.extra}  # a key kept as it was read wins (an id of another type, say)

    @classmethod
    def from_json(cls, data: dict[str, Any], record_id: str = "") -> DoneMarker:
        """A marker as read (``record_id``: the id its file name says, for a marker without a readable ``id``)."""
        typed, extra = _split(data, cls._TYPES)
        return cls(**{"id": record_id, **typed}, extra=extra)


@dataclass
class FailureMarker:
    """``state/failed/<id>.json``: a record's last failure, and the earlier ones in ``history``.

    ``history`` holds ``{"reason", "message", "attempt", "task", "at"}`` per failure, oldest first (the last
    :data:`HISTORY_KEPT`); ``retry_at`` (UTC) is when Zenodo's budget returns, for a ``rate_limited`` one.
    """

    id: str
    reason: str | None = None
    message: str | None = None
    attempts: int | None = None
    quarantined: bool = False  # set aside: no round tries it again
    history: list[Any] = field(default_factory=list)
    retry_at: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    _TYPES: ClassVar[dict[str, tuple[type, ...]]] = {
        "id": (str,), "reason": (str,), "message": (str,), "attempts": (int,), "quarantined": (bool, int),
        "history": (list,), "retry_at": (str,)}

    def to_json(self) -> dict[str, Any]:
        """The marker as written: every key but ``retry_at`` always there (``null`` when unknown)."""
        out = {"id": self.id, "reason": self.reason, "message": self.message, "attempts": self.attempts,
               "quarantined": self.quarantined, "history": self.history}
        if self.retry_at is not None:
            out["retry_at"] = self.retry_at
        return {**out, **self.extra}  # a key kept as it was read wins

    @classmethod
    def from_json(cls, data: dict[str, Any], record_id: str = "") -> FailureMarker:
        """A marker as read (``record_id``: the id its file name says, for a marker without a readable ``id``)."""
        typed, extra = _split(data, cls._TYPES)
        return cls(**{"id": record_id, **typed}, extra=extra)

    @classmethod
    def unreadable(cls, record_id: str, why: str) -> FailureMarker:
        """What a marker that cannot be read counts as: a failure of its own, not quarantined (tried again)."""
        return cls(record_id, reason=UNREADABLE_MARKER, message=why)

    def failure_at(self, index: int) -> dict[str, Any]:
        """An entry of the history (``-1``: the last), ``{}`` when there is none or it is no object."""
        try:
            entry = self.history[index]
        except IndexError:
            return {}
        return entry if isinstance(entry, dict) else {}
