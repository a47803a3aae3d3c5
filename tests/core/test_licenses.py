"""A record's license read from every shape Zenodo gives it, and its category (zenodo_hpc/core/licenses.py)."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import licensed_hit, recorded_hit

from zenodo_hpc.core.config import ConfigError, config_from_dict
from zenodo_hpc.core.licenses import (
    CATEGORIES,
    KAGGLE_NAMES,
    LEGACY_IDS,
    LICENSE_ID,
    UNREADABLE,
    check_categories,
    frictionless_license,
    kaggle_license,
    license_category,
    license_title,
    record_license,
    vocabulary,
)
from zenodo_hpc.dataset.publish import KAGGLE_LICENSES


def with_legacy_license(value: Any) -> dict[str, Any]:
    """The recorded 2023 GitHub hit, its ``metadata.license`` set to ``value`` (absent for ``...``)."""
    hit = recorded_hit("record_2023.json")
    hit["metadata"].pop("license", None)
    if value is not ...:
        hit["metadata"]["license"] = value
    return hit


def with_rights(rights: Any) -> dict[str, Any]:
    """The recorded record in InvenioRDM's shape: ``metadata.rights`` instead of ``metadata.license``."""
    hit = with_legacy_license(...)
    hit["metadata"]["rights"] = rights
    return hit


def test_the_recorded_records_give_their_license_in_lower_case() -> None:
    assert record_license(recorded_hit("record_2023.json")) == "cc-by-4.0"
    assert record_license(recorded_hit("record_current_github.json")) == "cc-by-4.0"
    assert record_license(recorded_hit("search_legacy_2021.json")) == "cc-by-4.0"  # recorded as "CC-BY-4.0"
    assert record_license(recorded_hit("search_legacy_2022.json")) == "cc-by-4.0"
    assert record_license(recorded_hit("record_current_2025.json")) is None  # recorded without a license
    assert record_license(recorded_hit("record_2023.json")["metadata"]) == "cc-by-4.0"  # the metadata alone


@pytest.mark.parametrize(("license_", "expected", "category"), [
    ({"id": "mit"}, "mit", "permissive"),
    ({"id": "apache-2.0"}, "apache-2.0", "permissive"),
    ({"id": "GPL-3.0"}, "gpl-3.0", "copyleft"),  # a legacy id: gpl-3.0-only today
    ({"id": "gpl-3.0-or-later"}, "gpl-3.0-or-later", "copyleft"),
    ({"id": "cc-by-4.0"}, "cc-by-4.0", "permissive"),
    ({"id": "cc-by-sa-4.0"}, "cc-by-sa-4.0", "copyleft"),
    ({"id": "cc-by-nc-4.0"}, "cc-by-nc-4.0", "other"),
    ({"id": "other-closed"}, "other-closed", "other"),
    ({"id": "notspecified"}, "notspecified", "none"),
    ("MIT", "mit", "permissive"),  # older records: a plain string
    (None, None, "none"),
    (..., None, "none"),  # no license key at all
    ({}, None, "none"),
    ({"id": "mit; rm -rf /"}, UNREADABLE, "other"),  # not an id: a license is there, unreadable
    ({"id": "x" * 65}, UNREADABLE, "other"),
    ({"id": 42}, UNREADABLE, "other"),
    ({"id": ["mit"]}, UNREADABLE, "other"),
    ("\u00e9t\u00e9", UNREADABLE, "other"),
    (["mit"], UNREADABLE, "other"),
])
def test_the_legacy_shape(license_: Any, expected: str | None, category: str) -> None:
    hit = with_legacy_license(license_)
    assert record_license(hit) == expected
    assert license_category(record_license(hit)) == category


def test_the_invenio_rdm_shape_counts_the_first_right() -> None:
    assert record_license(with_rights([{"id": "apache-2.0", "title": {"en": "Apache License 2.0"},
                                        "props": {"scheme": "spdx"}}, {"id": "mit"}])) == "apache-2.0"
    assert record_license(with_rights([{"title": {"en": "My own license"}}])) == UNREADABLE  # a custom license
    assert record_license(with_rights([])) is None
    assert record_license(with_rights("nonsense")) == UNREADABLE
    assert record_license(with_rights([{"id": "lgpl-2.1-only"}])) == "lgpl-2.1-only"


def test_the_test_helper_makes_what_it_says() -> None:
    assert record_license(licensed_hit("7", "MIT", "string")) == "mit"
    assert record_license(licensed_hit("7", "gpl-3.0-only", "rdm")) == "gpl-3.0-only"
    assert record_license(licensed_hit("7", None)) is None


@pytest.mark.parametrize("record", [None, 3, "mit", [], {"metadata": "x"}, {"metadata": {"license": object()}}])
def test_anything_else_never_crashes(record: Any) -> None:
    assert record_license(record) in (None, UNREADABLE)


def test_every_id_of_zenodos_vocabulary_is_an_id_and_has_a_category() -> None:
    table = vocabulary()
    assert len(table) == 444 and table["mit"] == ("MIT License", "https://opensource.org/licenses/MIT")
    assert all(LICENSE_ID.fullmatch(i) for i in table)
    categories = {i: license_category(i) for i in table}
    assert set(categories.values()) == set(CATEGORIES)
    assert [i for i, c in categories.items() if c == "none"] == ["notspecified"]
    # the legacy ids map to ids of today's vocabulary, and keep the category of what they map to
    assert all(target in table for target in LEGACY_IDS.values())
    assert all(license_category(old) == license_category(new) for old, new in LEGACY_IDS.items())


@pytest.mark.parametrize(("license_id", "category"), [
    ("bsd-3-clause", "permissive"), ("cc0-1.0", "permissive"), ("unlicense", "permissive"), ("isc", "permissive"),
    ("cecill-b", "permissive"), ("cern-ohl-p-2.0", "permissive"), ("cc-zero", "permissive"),
    ("agpl-3.0-only", "copyleft"), ("mpl-2.0", "copyleft"), ("mpl-2.0-no-copyleft-exception", "copyleft"),
    ("eupl-1.2", "copyleft"), ("cecill-2.1", "copyleft"), ("odbl-1.0", "copyleft"), ("gfdl-1.3-only", "copyleft"),
    ("cc-by-nd-4.0", "other"), ("cc-by-nc-sa-4.0", "other"), ("polyform-noncommercial-1.0.0", "other"),
    ("busl-1.1", "other"), ("other-open", "other"), ("no-such-license", "other"), (UNREADABLE, "other"),
])
def test_categories_of_well_known_licenses(license_id: str, category: str) -> None:
    assert license_category(license_id) == category


def test_titles_and_the_frictionless_entry() -> None:
    assert license_title("gpl-3.0") == "GNU General Public License v3.0 only"  # through the legacy id
    assert frictionless_license("mit") == {"name": "mit", "title": "MIT License",
                                           "path": "https://opensource.org/licenses/MIT"}
    assert frictionless_license("other-open") == {"name": "other-open", "title": "Other (Open)"}  # Zenodo has no URL
    assert frictionless_license("made-up") == {"name": "made-up", "title": "made-up"}


def test_kaggle_gets_the_one_license_when_all_share_one_it_knows() -> None:
    assert kaggle_license({"cc-by-4.0"}) == "CC-BY-4.0"
    assert kaggle_license({"gpl-3.0-or-later"}) == "GPL-3.0"
    assert kaggle_license({"gpl-3.0"}) == "GPL-3.0"  # legacy id
    assert kaggle_license({"mit"}) == "other"  # Kaggle has no MIT: "other", the description says which
    assert kaggle_license({"mit", "apache-2.0"}) == "other"
    assert kaggle_license({"mit", None}) == "other"
    assert kaggle_license({None}) == "unknown"
    assert kaggle_license({None, "notspecified"}) == "unknown"
    assert set(KAGGLE_NAMES.values()) <= set(KAGGLE_LICENSES), "a name Kaggle does not take"
    assert all(license_id in vocabulary() for license_id in KAGGLE_NAMES)


def test_categories_are_checked() -> None:
    assert check_categories("copyleft, permissive") == ("permissive", "copyleft")  # in the table's order
    assert check_categories(["none", "none"]) == ("none",)
    with pytest.raises(ValueError, match="unknown license category libre: use permissive, copyleft, other, none"):
        check_categories("permissive,libre")
    with pytest.raises(ValueError, match="no license category given"):
        check_categories(",")


def test_the_export_section_of_the_config() -> None:
    cfg = config_from_dict({})
    assert cfg.export.license_categories == list(CATEGORIES)
    assert (cfg.export.splits.train, cfg.export.splits.validation, cfg.export.splits.test) == (0.9, 0.05, 0.05)
    cfg = config_from_dict({"export": {"license_categories": ["permissive"],
                                       "splits": {"train": 0.8, "validation": 0.1, "test": 0.1}}})
    assert cfg.export.license_categories == ["permissive"] and cfg.export.splits.train == 0.8
    assert config_from_dict({"export": {"splits": {"train": 1, "validation": 0, "test": 0}}}).export.splits.train == 1
    for export, message in [
        ({"license_categories": ["libre"]}, r"export\.license_categories: must be one of permissive, copyleft, "),
        ({"license_categories": []}, r"export\.license_categories: list each of .* at least one"),
        ({"license_categories": ["none", "none"]}, r"export\.license_categories: list each of .* at most once"),
        ({"splits": {"train": 0.5}}, r"export\.splits: the fractions must add up to 1, train 0\.5, validation "
                                     r"0\.05, test 0\.05 add up to 0\.6"),
        ({"splits": {"train": -0.1, "validation": 0.6, "test": 0.5}}, r"export\.splits\.train: must be at least 0"),
        ({"splits": {"dev": 0.1}}, r"export\.splits\.dev: unknown key \(known keys: train, validation, test\)"),
        ({"splits": {"train": "most"}}, r"export\.splits\.train: expected a number"),
    ]:
        with pytest.raises(ConfigError, match=message):
            config_from_dict({"export": export})
