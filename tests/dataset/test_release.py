"""The release's feed (zenodo_hpc/dataset/release.py): ``releases/feed.xml`` is a valid Atom feed (RFC 4287):
read by a real feed parser (feedparser), and the RFC's rules checked one by one, for a run with an unpublished
release and a published one (a DOI and Kaggle)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import feedparser
import pytest

from zenodo_hpc.core.config import Config, config_from_dict
from zenodo_hpc.core.state import open_run
from zenodo_hpc.dataset.release import Release, link_changelog, save_release, write_feed

ATOM = "{http://www.w3.org/2005/Atom}"
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
DOI = "10.5281/zenodo.1234"
KAGGLE = "https://www.kaggle.com/datasets/alice/zenodo-ml-code-images"
HUB = "https://huggingface.co/datasets/alice/zenodo-ml"


def releases(cfg: Config) -> tuple[Release, Release]:
    """Release 1 published nowhere (no publish targets, or its publishing failed); release 2 on Zenodo, Kaggle and
    the Hugging Face Hub."""
    first = Release(version="2026.11.01", created="2026-11-01T03:00:00Z", image="zenodo-ml-2026.11.01.sqsh",
                    md5="a" * 32, sha256="b" * 64, size=1000, records=["1", "2"], added=["1", "2"],
                    published={"zenodo": {"ok": False, "error": "HTTP 503"}})
    second = Release(version="2026.12.01", created="2026-12-01T03:00:00Z", image="zenodo-ml-2026.12.01.sqsh",
                     md5="c" * 32, sha256="d" * 64, size=2000, records=["1", "2", "3"], added=["3"],
                     previous=first.version,
                     published={"kaggle": {"ok": True, "url": KAGGLE}, "zenodo": {"ok": True, "doi": DOI},
                                "huggingface": {"ok": True, "url": HUB, "tag": "2026.12.01", "repo": "alice/zenodo-ml",
                                                "commit": "e" * 40}})
    run = open_run(cfg)
    for release in (first, second):
        save_release(run, release)
    return first, second


@pytest.fixture
def feed(tmp_path: Path) -> Path:
    cfg = config_from_dict({"run": {"scratch": str(tmp_path / "scratch"), "name": "monthly & <co> 2026"}})
    releases(cfg)
    return write_feed(open_run(cfg), cfg)


def test_a_feed_parser_reads_the_feed_without_complaint_and_links_the_doi(feed: Path) -> None:
    parsed = feedparser.parse(feed.read_bytes())
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    assert parsed.feed.title == "Zenodo-ML releases (monthly & <co> 2026)"
    (own,) = [link.href for link in parsed.feed.links if link.rel == "self"]
    assert own.startswith("file:") and own.endswith("/releases/feed.xml")  # feedparser drops file:///'s third /
    newest, oldest = parsed.entries
    assert newest.link == f"https://doi.org/{DOI}"  # what a reader opens: the DOI, not Kaggle
    assert [link.href for link in newest.links if link.rel == "related"] == [KAGGLE, HUB]
    assert f"Kaggle: {KAGGLE}\nHugging Face: {HUB} (tag 2026.12.01)\n" in newest.content[0].value
    assert not [link for link in oldest.get("links", []) if link.rel == "related"]
    assert f"sha256 {'d' * 64}" in newest.content[0].value
    assert oldest.content[0].value.startswith("Zenodo-ML release 2026.11.01: 2 records (+2 added")
    assert "releases/2026.11.01/" in oldest.content[0].value
    assert newest.id != oldest.id and newest.id.endswith(":2026.12.01")


def absolute_iri(text: str | None) -> bool:
    return bool(text) and bool(urlsplit(text).scheme) and not re.search(r"[\s<>\"{}|\\^`]", text or "")


def alternates_unique(element: ET.Element) -> bool:
    """4.1.1 and 4.1.2: at most one rel="alternate" link per type and hreflang."""
    kinds = Counter((link.get("type"), link.get("hreflang")) for link in element.findall(f"{ATOM}link")
                    if link.get("rel", "alternate") == "alternate")
    return all(count == 1 for count in kinds.values())


def test_the_feed_keeps_every_rule_of_rfc_4287(feed: Path) -> None:
    root = ET.parse(feed).getroot()
    assert root.tag == f"{ATOM}feed"
    for name in ("id", "title", "updated"):  # 4.1.1: exactly one each
        assert len(root.findall(f"{ATOM}{name}")) == 1, name
    assert absolute_iri(root.findtext(f"{ATOM}id"))  # 4.2.6: an IRI
    assert RFC3339.fullmatch(root.findtext(f"{ATOM}updated") or "")  # 3.3: a date construct
    assert root.find(f"{ATOM}author/{ATOM}name") is not None  # 4.1.1: an author (the entries have none of their own)
    selfs = [link for link in root.findall(f"{ATOM}link") if link.get("rel") == "self"]  # 4.1.1: SHOULD
    assert [link.get("href") for link in selfs] == [feed.absolute().as_uri()]
    assert alternates_unique(root)
    entries = root.findall(f"{ATOM}entry")
    assert len(entries) == 2
    for entry in entries:
        for name in ("id", "title", "updated"):  # 4.1.2: exactly one each
            assert len(entry.findall(f"{ATOM}{name}")) == 1, name
        assert absolute_iri(entry.findtext(f"{ATOM}id"))
        assert RFC3339.fullmatch(entry.findtext(f"{ATOM}updated") or "")
        alternate = [link for link in entry.findall(f"{ATOM}link") if link.get("rel", "alternate") == "alternate"]
        content = entry.findall(f"{ATOM}content")
        assert content or alternate  # 4.1.2: content, or else an alternate link
        assert len(content) <= 1 and alternates_unique(entry)
        assert all(c.get("src") is None and c.get("type", "text") == "text" for c in content)  # no summary needed
        assert all(absolute_iri(link.get("href")) for link in entry.findall(f"{ATOM}link"))
    assert len({entry.findtext(f"{ATOM}id") for entry in entries}) == 2
    published = entries[0]
    (alternate,) = [link for link in published.findall(f"{ATOM}link") if link.get("rel", "alternate") == "alternate"]
    assert alternate.get("href") == f"https://doi.org/{DOI}"


def test_the_changelog_ends_with_where_the_release_was_published(tmp_path: Path) -> None:
    """Its ``## Published`` section is written again as each publication succeeds, never twice, and names only
    what succeeded (a failed Hub publication is not a link)."""
    cfg = config_from_dict({"run": {"scratch": str(tmp_path / "scratch"), "name": "zenodo-ml"}})
    _, second = releases(cfg)
    run = open_run(cfg)
    path = run.changelog(second.version)
    path.write_text("# Zenodo-ML release 2026.12.01\n\n## Newly quarantined (0)\n\n(none)\n")
    hub = second.published.pop("huggingface")
    second.published["huggingface"] = {"ok": False, "error": "uploading (alice/zenodo-ml): HTTP 500"}
    link_changelog(run, second)
    assert path.read_text() == ("# Zenodo-ML release 2026.12.01\n\n## Newly quarantined (0)\n\n(none)\n\n"
                                f"## Published\n\n- Kaggle: {KAGGLE}\n")
    second.published["huggingface"] = hub
    link_changelog(run, second)
    link_changelog(run, second)
    assert path.read_text() == ("# Zenodo-ML release 2026.12.01\n\n## Newly quarantined (0)\n\n(none)\n\n"
                                f"## Published\n\n- Kaggle: {KAGGLE}\n- Hugging Face: {HUB} (tag 2026.12.01)\n")
