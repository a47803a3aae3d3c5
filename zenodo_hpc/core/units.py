"""Sizes as people read them in messages and summaries."""

from __future__ import annotations


def byte_size(n: int, *, kilo: str = "kB") -> str:
    """``1234567`` -> ``1.2 MB`` (powers of 1000, up to TB); under 1000 ``n bytes``. ``kilo`` spells the
    thousands: Zenodo's pages write ``kB``, Kaggle's ``KB``, and each message follows its service."""
    value = float(n)
    for unit in ("bytes", kilo, "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")
