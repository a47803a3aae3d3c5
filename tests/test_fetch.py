"""Fetch and process records from the Zenodo and codeload doubles: good, GitHub fallback, and broken ones."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import stdlib_package

from zenodo_hpc.client import HttpClient
from zenodo_hpc.config import Config, config_from_dict
from zenodo_hpc.doubles import ZenodoDouble, make_zip
from zenodo_hpc.fetch import fetch_all, github_source, zenodo_archives
from zenodo_hpc.load import load_images, load_metadata
from zenodo_hpc.raster import rasterize
from zenodo_hpc.records import parse_md5
from zenodo_hpc.state import RunDir, append_records, ids_in, open_run, read_failure
from zenodo_hpc.worker import make_client, process_record, process_records

JSON_FILES = {p.name: p.read_bytes() for p in sorted(stdlib_package("json").glob("*.py"))}


def repo_zip(top: str) -> bytes:
    return make_zip({f"{top}/{name}": data for name, data in JSON_FILES.items()})


def repo_tar_gz(top: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, data in JSON_FILES.items():
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def double() -> Iterator[ZenodoDouble]:
    with ZenodoDouble() as zenodo:
        yield zenodo


def make_cfg(tmp_path: Path, double: ZenodoDouble, **fetch: object) -> Config:
    return config_from_dict({
        "run": {"scratch": str(tmp_path), "name": "run"},
        "zenodo": {"api_url": double.api_url, "rate_limit_per_min": 60_000, "retries": 2},
        "github": {"codeload_url": double.codeload_url},
        "fetch": {"attempts": 2, **fetch},
    })


def add(double: ZenodoDouble, record_id: int, files: dict[str, bytes] | None = None, *,
        github: tuple[str, str, str] | None = None, legacy: bool = False,
        checksums: dict[str, str] | None = None) -> dict:
    return double.add_record(ZenodoDouble.make_hit(record_id, created="2019-01-01", github=github), files,
                             legacy=legacy, checksums=checksums)


def test_a_mix_of_good_fallback_and_broken_records(tmp_path: Path, double: ZenodoDouble) -> None:
    good = add(double, 1, {"owner/json-v1.0.zip": repo_zip("owner-json-abc1234")})
    legacy = add(double, 2, {"json-2.0.tar.gz": repo_tar_gz("json-2.0")}, legacy=True)
    double.add_codeload("owner", "gh", "v3.0", repo_zip("gh-v3.0"))
    fallback = add(double, 3, github=("owner", "gh", "v3.0"))  # no files: the release tag from GitHub
    double.add_codeload("owner", "gh4", "v4", repo_zip("gh4-v4"))
    broken_then_github = add(double, 4, {"x.zip": repo_zip("x")}, github=("owner", "gh4", "v4"))
    double.fail("/api/records/4/files/x.zip/content", "404", times=50)
    no_archive = add(double, 5, {"paper.pdf": b"%PDF-1.4", "figure.png": b"\x89PNG"})
    mismatch = add(double, 6, {"m.zip": repo_zip("m")}, checksums={"m.zip": "md5:" + "0" * 32})
    gone = add(double, 7, {"g.zip": repo_zip("g")})
    double.fail("/api/records/7/files/g.zip/content", "404", times=50)
    not_archive = add(double, 8, {"fake.zip": b"<html>this is no zip</html>"})
    looping = add(double, 9, {"l.zip": repo_zip("l")})
    double.fail("/api/records/9/files/l.zip/content", "redirect_loop")
    flaky = add(double, 10, {"f.zip": repo_zip("f")})
    double.fail("/api/records/10/files/f.zip/content", "503", times=2)
    double.fail("/api/records/10/files/f.zip/content", "truncate", times=1)

    cfg = make_cfg(tmp_path, double)
    run = open_run(cfg)
    hits = [good, legacy, fallback, broken_then_github, no_archive, mismatch, gone, not_archive, looping, flaky]
    outcomes = {o.record_id: o for o in process_records(hits, run, cfg)}

    assert {k for k, o in outcomes.items() if o.status == "done"} == {"1", "2", "3", "4", "10"}
    assert ids_in(run, "done") == {"1", "2", "3", "4", "10"}
    reasons = {k: read_failure(run, k)["reason"] for k in ("5", "6", "7", "8", "9")}
    assert reasons == {"5": "no_archive", "6": "checksum_mismatch", "7": "http_404", "8": "bad_archive",
                       "9": "redirect_loop"}
    assert not (run.data / "5").exists() and not (run.data / "6").exists()

    images = load_images(run.data / "1")
    for name, data in JSON_FILES.items():
        if len(data) <= 100_000:
            np.testing.assert_array_equal(images[f"owner-json-abc1234/{name}"], rasterize(data))
    assert "json-2.0/decoder.py" in load_images(run.data / "2")
    meta3 = load_metadata(run.data / "3")
    assert meta3["source"]["kind"] == "github" and meta3["source"]["fallback_reason"] == "no_files"
    assert meta3["source"]["url"].endswith("/owner/gh/zip/refs/tags/v3.0")
    assert meta3["hit"]["id"] == 3
    meta4 = load_metadata(run.data / "4")
    assert meta4["source"]["kind"] == "github" and meta4["source"]["fallback_reason"] == "http_404"
    meta1 = load_metadata(run.data / "1")
    assert meta1["source"]["archives"][0]["checksum"] == "verified"
    assert meta1["source"]["archives"][0]["md5"] == good["files"][0]["checksum"].removeprefix("md5:")


def test_several_archives_are_all_kept_under_their_names(tmp_path: Path, double: ZenodoDouble) -> None:
    record = add(double, 11, {"v1.zip": repo_zip("pkg"), "v1.tar.gz": repo_tar_gz("pkg"), "notes.txt": b"x"})
    cfg = make_cfg(tmp_path, double)
    run = open_run(cfg)
    assert process_record(record, run, cfg, _client(cfg)).status == "done"
    keys = set(load_images(run.data / "11"))
    assert "v1.zip/pkg/decoder.py" in keys and "v1.tar.gz/pkg/decoder.py" in keys
    assert [a["name"] for a in load_metadata(run.data / "11")["source"]["archives"]] == ["v1.tar.gz", "v1.zip"]


def _client(cfg: Config) -> HttpClient | None:
    return make_client(cfg)


def test_download_over_the_size_cap_is_too_large(tmp_path: Path, double: ZenodoDouble) -> None:
    record = add(double, 12, {"big.zip": repo_zip("big")})
    cfg = make_cfg(tmp_path, double, max_bytes=1000)
    run = open_run(cfg)
    outcome = process_record(record, run, cfg, _client(cfg))
    assert outcome.status == "failed" and outcome.reason == "too_large"
    lying = dict(record, files=[dict(record["files"][0], size=10)])  # the record understates the size
    run2 = RunDir(tmp_path / "other")
    open_run(config_from_dict({**cfg.to_dict(), "run": {"scratch": str(tmp_path), "name": "other"}}))
    assert process_record(lying, run2, cfg, _client(cfg)).reason == "too_large"


def test_repeated_failures_quarantine_the_record(tmp_path: Path, double: ZenodoDouble) -> None:
    record = add(double, 13, {"q.zip": repo_zip("q")})
    double.fail("/api/records/13/files/q.zip/content", "404", times=100)
    cfg = config_from_dict({**make_cfg(tmp_path, double).to_dict(), "executor": {"max_attempts": 2}})
    run = open_run(cfg)
    client = _client(cfg)
    assert process_record(record, run, cfg, client).status == "failed"
    assert process_record(record, run, cfg, client).status == "quarantined"
    assert read_failure(run, "13")["quarantined"] is True
    before = len(double.requests)
    assert process_record(record, run, cfg, client).status == "quarantined"
    assert len(double.requests) == before  # never tried again


def test_fetch_first_then_process_offline(tmp_path: Path) -> None:
    with ZenodoDouble() as double:
        records = [add(double, 20 + i, {f"r{i}.zip": repo_zip(f"r{i}")}) for i in range(3)]
        missing = add(double, 30, {"m.zip": repo_zip("m")})
        double.fail("/api/records/30/files/m.zip/content", "404", times=50)
        cfg = make_cfg(tmp_path, double, cache=True)
        run = open_run(cfg)
        append_records(run.records, [*records, missing])
        result = fetch_all(run, cfg, progress=False)
        assert result.cached == 3 and result.failed == {"http_404": 1}
        assert fetch_all(run, cfg, progress=False).already == 3  # nothing downloaded twice
    # the double is gone: no network at all from here on
    offline = config_from_dict({**cfg.to_dict(), "fetch": {**cfg.to_dict()["fetch"], "offline": True}})
    outcomes = process_records([*records, missing], run, offline)
    assert [o.status for o in outcomes] == ["done", "done", "done", "failed"]
    assert outcomes[-1].reason == "http_404"  # the real reason, not just "not cached"


def test_record_shapes_old_and_new(double: ZenodoDouble) -> None:
    new = add(double, 40, {"a.zip": b"1", "b.txt": b"2", "c.tar.gz": b"3"})
    old = add(double, 41, {"a.zip": b"1"}, legacy=True)
    assert [s.name for s in zenodo_archives(new)] == ["a.zip", "c.tar.gz"]
    (source,) = zenodo_archives(old)
    assert source.md5 == parse_md5(old["files"][0]["checksum"]) and "/files/" in source.url
    assert parse_md5("MD5:" + "A" * 32) == "a" * 32 and parse_md5("sha256:00") is None and parse_md5(None) is None
    assert zenodo_archives({"id": 1}) == []
    hit_ = ZenodoDouble.make_hit(42, created="2019-01-01", github=("o", "r", "v1.2"))
    assert github_source(hit_, "https://codeload.github.com").url == \
        "https://codeload.github.com/o/r/zip/refs/tags/v1.2"
    assert github_source(ZenodoDouble.make_hit(43, created="2019-01-01"), "x") is None
