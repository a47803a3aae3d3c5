"""Sizes as people read them (zenodo_hpc/core/units.py): powers of 1000 up to TB, with each service's spelling of
the thousands."""

from __future__ import annotations

import pytest

from zenodo_hpc.core.units import byte_size


@pytest.mark.parametrize(("n", "text"), [(0, "0 bytes"), (1, "1 bytes"), (999, "999 bytes"), (1000, "1.0 kB"),
                                         (1234567, "1.2 MB"), (5 * 10**9, "5.0 GB"), (2 * 10**12, "2.0 TB"),
                                         (3 * 10**15, "3000.0 TB")])
def test_a_size_in_the_largest_unit_under_a_thousand_and_tb_at_most(n: int, text: str) -> None:
    assert byte_size(n) == text


def test_the_thousands_are_spelled_as_the_service_spells_them() -> None:
    assert byte_size(1500, kilo="KB") == "1.5 KB"  # Kaggle's pages
    assert byte_size(1500) == "1.5 kB"  # Zenodo's
    assert byte_size(2_500_000, kilo="KB") == "2.5 MB"  # only the thousands differ
