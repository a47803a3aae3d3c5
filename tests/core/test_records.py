"""Reading a Zenodo hit defensively: ids, every files shape, content links, access, the release link.

The shapes come from the recorded answers in tests/fixtures/zenodo/ (SOURCES.md says where each is from).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zenodo_hpc.core.records import (
    BadRecord,
    check_hit,
    declared_size,
    file_entries,
    github_hint,
    github_release,
    link_problem,
    parse_md5,
    record_id,
    restriction,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "zenodo"


def fixture_hit(name: str) -> dict:
    data = json.loads((FIXTURES / name).read_text())
    hits = data.get("hits", {}).get("hits") if isinstance(data.get("hits"), dict) else None
    return hits[0] if hits else data


@pytest.mark.parametrize("bad", ["../../x", "/etc/passwd", "1/../../x", "abc$", "9" * 300, "0", "-5", "1.5", "", " 7",
                                 True, None, 1.0, [1], {"a": 1}])
def test_only_positive_integer_ids_pass(bad: object) -> None:
    with pytest.raises(BadRecord) as info:
        record_id({"id": bad})
    assert info.value.reason == "bad_id"


def test_good_ids_are_digit_strings() -> None:
    assert record_id({"id": 7}) == "7" and record_id({"id": "1065022"}) == "1065022"


@pytest.mark.parametrize("hit", [{"id": 1, "metadata": "a string"}, {"id": 1, "files": "x"},
                                 {"id": 1, "files": [{"key": "a.zip", "size": float("inf")}]},
                                 {"id": 1, "metadata": {"x": float("nan")}}, "not a dict", None])
def test_malformed_hits(hit: object) -> None:
    with pytest.raises(BadRecord) as info:
        check_hit(hit)
    assert info.value.reason == "malformed"


def test_every_recorded_shape_gives_the_content_link() -> None:
    legacy = file_entries(fixture_hit("search_legacy_2021.json"))
    assert legacy[0].key == "lexibank/utoaztecan-v1.1.zip" and "/api/files/" in legacy[0].url
    assert legacy[0].md5 and legacy[0].size
    (entry,) = [e for e in file_entries(fixture_hit("record_2023.json")) if e.key.endswith(".zip")]
    raw = next(f for f in fixture_hit("record_2023.json")["files"] if f["filename"] == entry.key)
    assert entry.url == raw["links"]["download"] != raw["links"]["self"]  # self is the file's metadata
    assert entry.md5 == raw["checksum"] and entry.size == raw["filesize"]
    current = file_entries(fixture_hit("record_current_2025.json"))
    assert current and all(e.url.endswith("/content") and e.md5 for e in current)
    native_hit = fixture_hit("record_native.json")
    assert isinstance(native_hit["files"], dict)
    native = file_entries(native_hit)
    assert native and all(e.url.endswith("/content") for e in native)
    assert declared_size(native_hit) == sum(e["size"] for e in native_hit["files"]["entries"].values())


def test_restricted_hits_are_recognised() -> None:
    assert restriction(fixture_hit("record_2023_restricted.json")) == "access_right is 'restricted'"
    assert restriction(fixture_hit("record_2023.json")) is None
    assert restriction({"id": 1, "metadata": {"access_right": "embargoed"}})
    assert restriction({"id": 1, "access": {"record": "public", "files": "restricted"}}) == \
        "access.files is 'restricted'"


@pytest.mark.parametrize("url", ["file:///etc/passwd", "relative/path.zip", "http://[::1", "ftp://x/y", "http://",
                                 "javascript:alert(1)", 7, None, "http://a b/c"])
def test_links_that_cannot_be_downloaded(url: object) -> None:
    assert link_problem(url) is not None


def test_only_the_integrations_release_link_is_a_release() -> None:
    recorded = fixture_hit("search_legacy_2021.json")
    release = github_release(recorded)
    assert (release.owner, release.repo, release.tag) == ("lexibank", "utoaztecan", "v1.1")
    ipbes = {"id": 1, "metadata": {"related_identifiers": [
        {"identifier": "https://github.com/IPBES-Data/IPBES_LOD/tree/main/Global%20Assessment%201",
         "relation": "isIdenticalTo", "scheme": "url"}]}}
    assert github_release(ipbes) is None  # a branch folder under another relation is not a release
    assert "isIdenticalTo" in github_hint(ipbes) and ".zenodo.json" in github_hint(ipbes)
    encoded = {"id": 1, "metadata": {"related_identifiers": [
        {"identifier": "https://github.com/o/r/tree/release%2F1.0%2Brc1", "relation": "isSupplementTo"}]}}
    assert github_release(encoded).tag == "release/1.0+rc1"  # decoded once, never twice
    for hostile in ("https://github.com/o/r/tree/..%2F..%2Fx", "https://github.com/o/r/tree/a%0Ab",
                    "https://github.com/o/r/tree/v%201"):  # git allows no space, control character or ".."
        hit = {"id": 1, "metadata": {"related_identifiers": [{"identifier": hostile, "relation": "isSupplementTo"}]}}
        assert github_release(hit) is None


def test_md5_forms() -> None:
    assert parse_md5("MD5:" + "A" * 32) == "a" * 32 and parse_md5("b" * 32) == "b" * 32
    assert parse_md5("sha256:00") is None and parse_md5(None) is None and parse_md5("md5:xyz") is None
