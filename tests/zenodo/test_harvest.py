"""Harvest against the Zenodo double: paging, date windows past the result cap, exclusion, resume, --since."""

from __future__ import annotations

import json
import logging
import multiprocessing
import re
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from doubles import ZenodoDouble

from zenodo_hpc.cli import main
from zenodo_hpc.core.config import Config, config_from_dict
from zenodo_hpc.core.errors import UserError
from zenodo_hpc.core.state import iter_records, open_run
from zenodo_hpc.zenodo.client import HttpClient
from zenodo_hpc.zenodo.harvest import format_summary, harvest, parse_since

START = datetime(2014, 1, 1, tzinfo=timezone.utc)


def created(i: int) -> str:
    """Record i's creation time: spread over ten years, a few on the same day."""
    return (START + timedelta(hours=i * 350)).strftime("%Y-%m-%dT%H:%M:%S")


@pytest.fixture
def double() -> Iterator[ZenodoDouble]:
    with ZenodoDouble(page_cap_anonymous=25, window=100) as zenodo:
        for i in range(1, 251):
            zenodo.add_record(ZenodoDouble.make_hit(1000 + i, created=created(i)))
        yield zenodo


def make_config(tmp_path: Path, double: ZenodoDouble, **zenodo: object) -> Config:
    settings = {"api_url": double.api_url, "search_window": 100, "rate_limit_per_min": 60_000,
                "search_rate_limit_per_min": 60_000, "retries": 1, "limit": 10_000, **zenodo}
    return config_from_dict({"run": {"scratch": str(tmp_path), "name": "r"}, "zenodo": settings})


def harvested_ids(cfg: Config) -> list[int]:
    return [r["id"] for r in iter_records(cfg.run_dir / "records.jsonl")]


def searches(double: ZenodoDouble) -> list[dict[str, str]]:
    return [r.query for r in double.requests if r.path == "/api/records"]


def test_harvest_past_the_result_window_gets_every_record_exactly_once(tmp_path: Path, double: ZenodoDouble) -> None:
    cfg = make_config(tmp_path, double)
    result = harvest(cfg, progress=False)
    ids = harvested_ids(cfg)
    assert sorted(ids) == list(range(1001, 1251))
    assert len(ids) == len(set(ids)) == 250
    assert ids == sorted(ids)  # oldest first
    assert result.added == 250 and result.complete
    queries = searches(double)
    assert all(int(q["size"]) <= 25 for q in queries)
    assert all((int(q["page"]) - 1) * int(q["size"]) < 100 for q in queries)
    assert queries[0]["q"] == "created:[* TO 2013-01-01T00:00:00}"  # an open lower bound: no fixed start
    assert all(re.fullmatch(r"created:\[\S+ TO (\S+\}|\*\])", q["q"]) for q in queries)
    assert queries[-1]["q"].endswith(" TO *]")  # and an open upper bound at the end
    assert len(queries) < 250 / 25 * 3  # windows of about a page each, not a request per record
    assert not [r for r in double.requests if r.status != 200]


def test_finished_harvest_run_again_adds_nothing(tmp_path: Path, double: ZenodoDouble) -> None:
    cfg = make_config(tmp_path, double)
    harvest(cfg, progress=False)
    double.reset_log()
    again = harvest(cfg, progress=False)
    assert again.added == 0 and again.total == 250
    assert searches(double) == []


def test_limit_then_a_larger_limit_continues(tmp_path: Path, double: ZenodoDouble) -> None:
    cfg = make_config(tmp_path, double)
    first = harvest(cfg, limit=60, progress=False)
    assert first.added == 60 and harvested_ids(cfg) == list(range(1001, 1061))
    second = harvest(cfg, limit=130, progress=False)
    assert second.added == 70
    assert harvested_ids(cfg) == list(range(1001, 1131))


def test_interrupted_harvest_resumes_where_it_stopped(tmp_path: Path, double: ZenodoDouble) -> None:
    cfg = make_config(tmp_path, double)
    harvest(cfg, limit=40, progress=False)
    double.fail("/api/records", "503", times=2)  # one more than the retries: this harvest stops
    with pytest.raises(UserError, match="run the same command again to continue"):
        harvest(cfg, progress=False)
    done_before = len(harvested_ids(cfg))
    result = harvest(cfg, progress=False)
    ids = harvested_ids(cfg)
    assert sorted(ids) == list(range(1001, 1251)) and len(ids) == 250
    assert result.added == 250 - done_before


def test_crash_mid_append_leaves_a_line_that_is_repaired(tmp_path: Path, double: ZenodoDouble) -> None:
    cfg = make_config(tmp_path, double)
    harvest(cfg, limit=30, progress=False)
    with open(cfg.run_dir / "records.jsonl", "a") as handle:
        handle.write('{"id": 99999, "metad')  # the driver died here
    harvest(cfg, progress=False)
    ids = harvested_ids(cfg)
    assert 99999 not in ids and sorted(ids) == list(range(1001, 1251))
    for line in (cfg.run_dir / "records.jsonl").read_text().splitlines():
        json.loads(line)


def test_exclude_matches_title_github_repository_and_file_names(tmp_path: Path) -> None:
    with ZenodoDouble() as zenodo:
        zenodo.add_record(ZenodoDouble.make_hit(1, created="2015-01-01", title="gCube Portal"))
        zenodo.add_record(ZenodoDouble.make_hit(2, created="2015-01-02", github=("d4science", "gcube-core", "v1")))
        zenodo.add_record(ZenodoDouble.make_hit(3, created="2015-01-03"), files={"gcube-lib-1.0.tar.gz": b"x"})
        zenodo.add_record(ZenodoDouble.make_hit(4, created="2015-01-04", title="Cube solver"))
        zenodo.add_record(ZenodoDouble.make_hit(5, created="2015-01-05", title="Exotic"))
        cfg = make_config(tmp_path, zenodo, exclude=["gcube", "^exo"])
        result = harvest(cfg, progress=False)
    assert harvested_ids(cfg) == [4]
    assert result.excluded == 4


def test_only_software_and_latest_versions(tmp_path: Path) -> None:
    with ZenodoDouble() as zenodo:
        zenodo.add_record(ZenodoDouble.make_hit(1, created="2016-01-01", conceptrecid="100"))
        zenodo.add_record(ZenodoDouble.make_hit(2, created="2016-02-01", conceptrecid="100"))
        zenodo.add_record(ZenodoDouble.make_hit(3, created="2016-03-01", resource_type="dataset"))
        cfg = make_config(tmp_path, zenodo)
        harvest(cfg, progress=False)
        assert harvested_ids(cfg) == [2]
        every = make_config(tmp_path / "all", zenodo, all_versions=True)
        harvest(every, progress=False)
        assert harvested_ids(every) == [1, 2]


def test_since_appends_only_new_and_modified_records(tmp_path: Path, double: ZenodoDouble) -> None:
    cfg = make_config(tmp_path, double)
    harvest(cfg, progress=False)
    double.add_record(ZenodoDouble.make_hit(5000, created="2025-06-01"))
    double.add_record(ZenodoDouble.make_hit(5001, created="2013-06-01", updated="2025-07-01"))
    double.reset_log()
    result = harvest(cfg, since=parse_since("2025-01-01"), progress=False)
    assert result.added == 2
    assert harvested_ids(cfg)[-2:] == [5001, 5000] or harvested_ids(cfg)[-2:] == [5000, 5001]
    assert len(harvested_ids(cfg)) == 252
    assert all("updated:[2025-01-01T00:00:00 TO *]" in q["q"] for q in searches(double))
    assert harvest(cfg, since=parse_since("2025-01-01"), progress=False).added == 0
    # the same since again, after Zenodo gained a record (an update that made no release is followed by one that
    # starts from the same release): the complete search is made again, not taken as done
    double.add_record(ZenodoDouble.make_hit(5002, created="2025-08-01"))
    again = harvest(cfg, since=parse_since("2025-01-01"), progress=False)
    assert again.added == 1 and again.requests > 0 and harvested_ids(cfg)[-1] == 5002


def test_records_missing_fields_are_still_harvested(tmp_path: Path) -> None:
    with ZenodoDouble() as zenodo:
        zenodo.add_record(ZenodoDouble.make_hit(1, created="2016-01-01"))
        hit = ZenodoDouble.make_hit(2, created="2016-01-02")
        for key in ("title", "related_identifiers", "creators", "license"):
            del hit["metadata"][key]
        del hit["files"]
        zenodo.add_record(hit)
        cfg = make_config(tmp_path, zenodo, exclude=["x"])
        result = harvest(cfg, progress=False)
    assert harvested_ids(cfg) == [1, 2] and result.malformed == 0


def test_token_gives_bigger_pages_and_is_never_written(tmp_path: Path, double: ZenodoDouble,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    secret = "s3cr3t-t0ken-value"
    with ZenodoDouble(window=100, tokens=[secret]) as zenodo:
        for i in range(1, 120):
            zenodo.add_record(ZenodoDouble.make_hit(i, created=created(i)))
        monkeypatch.setenv("MY_ZENODO_TOKEN", secret)
        cfg = make_config(tmp_path, zenodo, token_env="MY_ZENODO_TOKEN")
        with caplog.at_level(logging.DEBUG):
            harvest(cfg, progress=False)
        sizes = Counter(q["size"] for q in searches(zenodo))
        assert set(sizes) == {"100"} and all(r.authenticated for r in zenodo.requests)
    assert len(harvested_ids(cfg)) == 119
    assert secret not in caplog.text
    for path in cfg.run_dir.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_unreachable_api_is_a_one_line_error_naming_the_url(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"run: {{scratch: {tmp_path}}}\nzenodo: {{retries: 0}}\n")
    code = main(["harvest", "-c", str(config), "--api-url", "http://127.0.0.1:9/api", "--limit", "5"])
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("zenodo-hpc harvest: error: harvest stopped: cannot reach http://127.0.0.1:9")


def test_harvest_command_prints_a_summary(tmp_path: Path, double: ZenodoDouble,
                                          capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"run: {{scratch: {tmp_path}, name: r}}\n"
                      "zenodo: {search_window: 100, rate_limit_per_min: 60000, search_rate_limit_per_min: 60000}\n")
    code = main(["harvest", "-c", str(config), "--api-url", double.api_url, "--limit", "30"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith(f"harvest: 30 records in {tmp_path / 'r' / 'records.jsonl'} (+30 new")
    assert (tmp_path / "r" / "run.yaml").exists()


def test_bad_since_date_is_a_clear_error() -> None:
    with pytest.raises(UserError, match="--since 'last week': expected a date like 2024-01-31"):
        parse_since("last week")


class _ChangingIndex(HttpClient):
    """A client that lets Zenodo change between two searches: after the first page, an early record gets a
    new version, so it leaves the latest-versions results and every later record moves one place up."""

    def __init__(self, double: ZenodoDouble, records: Path, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.double, self.records = double, records
        self.changed = False

    def get(self, url: str, **kwargs: object):  # the parent's type
        if not self.changed and self.records.exists() and 1001 in [r["id"] for r in iter_records(self.records)]:
            # the first page of records is harvested: now record 1001 gets a new version
            self.double.add_record(ZenodoDouble.make_hit(9000, created="2026-01-01", conceptrecid="1001"))
            self.changed = True
        return super().get(url, **kwargs)


def test_paging_over_a_changing_index_misses_no_record(tmp_path: Path, double: ZenodoDouble) -> None:
    cfg = make_config(tmp_path, double)
    client = _ChangingIndex(double, cfg.run_dir / "records.jsonl", per_minute=60_000, retries=1)
    harvest(cfg, progress=False, client=client)
    assert client.changed
    ids = harvested_ids(cfg)
    # every record that is a latest version now was harvested (page offsets shifted under the harvest:
    # record 1026, first of page 2 before the change, would have slipped to page 1 and been skipped)
    assert set(range(1002, 1251)) | {9000} <= set(ids)
    assert len(ids) == len(set(ids))


def _harvest_in_child(cfg: Config, queue: object) -> None:
    try:
        result = harvest(cfg, progress=False)
        queue.put(("ok", result.added))
    except UserError as exc:
        queue.put(("error", str(exc)))


def test_two_harvests_at_once_leave_no_duplicate(tmp_path: Path, double: ZenodoDouble) -> None:
    cfg = make_config(tmp_path, double)
    open_run(cfg)
    double.fail("/api/records", "slow", times=1, seconds=2.0)  # the first harvest holds the run a while
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [context.Process(target=_harvest_in_child, args=(cfg, queue)) for _ in range(2)]
    for child in children:
        child.start()
    results = sorted(queue.get(timeout=120) for _ in children)
    for child in children:
        child.join(timeout=60)
    ids = harvested_ids(cfg)
    assert len(ids) == len(set(ids)) == 250
    assert results[0] == ("error", results[0][1]) and "another zenodo-hpc driver (harvest" in results[0][1]
    assert "harvest.lock" in results[0][1]
    assert results[1] == ("ok", 250)
    again = harvest(cfg, progress=False)  # the lock was released
    assert again.added == 0 and not (cfg.run_dir / "state" / "harvest.lock").exists()


def test_hostile_hits_are_skipped_and_counted_and_write_nothing_outside(tmp_path: Path) -> None:
    with ZenodoDouble() as zenodo:
        for i in range(1, 6):
            zenodo.add_record(ZenodoDouble.make_hit(i, created=f"2016-01-0{i}"))
        for bad in ('"../../x"', '"/tmp/abs"', '"1/../../x"', '"abc$"', '"' + "9" * 300 + '"'):
            zenodo.add_raw_hit('{"id": ' + bad + ', "metadata": {"title": "hostile"}}')
        zenodo.add_raw_hit('{"id": 77, "metadata": "a string"}')
        zenodo.add_raw_hit('{"id": 78, "metadata": {}, "files": [{"key": "a.zip", "size": Infinity}]}')
        cfg = make_config(tmp_path / "runs", zenodo)
        result = harvest(cfg, progress=False)
    assert harvested_ids(cfg) == [1, 2, 3, 4, 5]
    assert result.skipped["bad_id"] >= 5 and result.skipped["malformed"] >= 2
    assert "malformed hits skipped (bad_id" in format_summary(result)
    assert {p.name for p in tmp_path.iterdir()} == {"runs"}
    assert "Infinity" not in (cfg.run_dir / "records.jsonl").read_text()


def test_a_lone_surrogate_in_a_hit_costs_no_record(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``"\\ud800"`` is valid JSON that no UTF-8 can hold: it used to stop every harvest, its page's records lost."""
    with ZenodoDouble() as zenodo:
        for i in range(1, 4):
            zenodo.add_record(ZenodoDouble.make_hit(i, created=f"2016-01-0{i}"))
        hit = ZenodoDouble.make_hit(9, created="2016-01-02T12:00:00", title="a \ud800 title")
        hit["files"] = [{"key": "x\udfff.zip", "size": 1, "checksum": "md5:" + "0" * 32, "links": {}}]
        zenodo.add_record(hit)
        cfg = make_config(tmp_path, zenodo)
        with caplog.at_level(logging.WARNING):
            result = harvest(cfg, progress=False)
        again = harvest(cfg, progress=False)
    assert result.complete and again.added == 0
    assert harvested_ids(cfg) == [1, 2, 9, 3]
    text = (cfg.run_dir / "records.jsonl").read_bytes().decode("utf-8")  # valid UTF-8 throughout
    kept = [json.loads(line) for line in text.splitlines()][2]
    assert kept["metadata"]["title"] == "a \ufffd title" and kept["files"][0]["key"] == "x\ufffd.zip"
    assert "record 9: 3 text(s) held unpaired UTF-16 surrogates" in caplog.text


def test_a_lying_total_ends_in_bounded_time(tmp_path: Path) -> None:
    with ZenodoDouble() as zenodo:
        for i in range(1, 31):
            zenodo.add_record(ZenodoDouble.make_hit(i, created=created(i)))
        zenodo.lie_about_total(10**12)
        cfg = make_config(tmp_path, zenodo)
        result = harvest(cfg, progress=False)
        assert sorted(harvested_ids(cfg)) == list(range(1, 31)) and result.complete
        assert len(searches(zenodo)) < 40


class _QueryDropped(HttpClient):
    """A client behind a proxy that drops the search's ``q``: Zenodo then answers every record, oldest first."""

    def get(self, url: str, **kwargs: object):  # the parent's type
        params = {k: v for k, v in dict(kwargs.pop("params", None) or {}).items() if k != "q"}  # type: ignore[call-overload]
        return super().get(url, params=params, **kwargs)


def harvest_positions(cfg: Config) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in (cfg.run_dir / "state" / "harvest").glob("*.json")]


def test_a_search_ignoring_its_query_stops_the_harvest_unfinished_and_the_next_one_resumes(
        tmp_path: Path, double: ZenodoDouble) -> None:
    cfg = make_config(tmp_path, double)
    harvest(cfg, limit=40, progress=False)
    ignoring = _QueryDropped(per_minute=60_000, retries=1)
    with pytest.raises(UserError, match=r"^harvest stopped: the search answered records created outside "
                                        r"created:\[\S+ TO \S+ \(record 1001\): the server ignores the query; .*"
                                        r"run the same command again to continue$"):
        harvest(cfg, progress=False, client=ignoring)
    assert len(harvested_ids(cfg)) == 40  # nothing of the wrong answer was kept
    assert [p["done"] for p in harvest_positions(cfg)] == [False]
    result = harvest(cfg, progress=False)  # Zenodo answers the query again: the harvest goes on from there
    assert result.complete and result.added == 210 and result.notes == []
    assert sorted(harvested_ids(cfg)) == list(range(1001, 1251))
    assert [p["done"] for p in harvest_positions(cfg)] == [True]


def test_a_position_saved_done_after_an_error_by_an_older_version_is_resumed(tmp_path: Path,
                                                                               double: ZenodoDouble) -> None:
    cfg = make_config(tmp_path, double)
    harvest(cfg, limit=40, progress=False)
    (path,) = (cfg.run_dir / "state" / "harvest").glob("*.json")
    saved = json.loads(path.read_text())
    path.write_text(json.dumps({**saved, "done": True, "ended": "the search answered records created outside "
                                "created:[2014-01-01T00:00:00 TO 2014-02-01T00:00:00} (record 999): the server "
                                "ignores the query; stopped"}))
    result = harvest(cfg, progress=False)
    assert result.complete and sorted(harvested_ids(cfg)) == list(range(1001, 1251))


@pytest.fixture
def query_ignoring_double() -> Iterator[ZenodoDouble]:
    """A search that answers a record created in 2010 whatever range is asked (after the first window)."""
    with ZenodoDouble() as zenodo:
        for i in range(1, 31):
            zenodo.add_record(ZenodoDouble.make_hit(i, created=created(i)))
        zenodo.add_raw_hit('{"id": 999, "created": "2010-01-01T00:00:00+00:00", "metadata": {}}')  # in every answer
        yield zenodo


@pytest.mark.parametrize("command", ["harvest", "run", "update"])
def test_a_harvest_stopped_by_a_server_ignoring_the_query_exits_non_zero_and_is_not_complete(
        tmp_path: Path, query_ignoring_double: ZenodoDouble, command: str, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"run: {{scratch: {tmp_path}, name: r}}\n"
                      f"zenodo: {{api_url: '{query_ignoring_double.api_url}', search_window: 100, "
                      "rate_limit_per_min: 60000, search_rate_limit_per_min: 60000}\n"
                      "executor: {kind: debug}\n")
    code = main([command, "-c", str(config)])
    out, err = capsys.readouterr()
    assert code == 1
    assert err.strip().splitlines()[-1].startswith(
        f"zenodo-hpc {command}: error: harvest stopped: the search answered records created outside created:[")
    assert "the server ignores the query" in err and "run the same command again to continue" in err
    assert "complete" not in out
    positions = [json.loads(p.read_text()) for p in (tmp_path / "r" / "state" / "harvest").glob("*.json")]
    assert [p["done"] for p in positions] == [False]
    assert not (tmp_path / "r" / "state" / "plans").exists() and not (tmp_path / "r" / "releases").exists()


def test_a_search_repeating_its_page_stops_the_harvest_unfinished(tmp_path: Path) -> None:
    with ZenodoDouble(page_cap_anonymous=25, window=100) as zenodo:
        for i in range(1, 61):  # sixty records in one second: paged through, and the second page is the first again
            zenodo.add_record(ZenodoDouble.make_hit(i, created="2016-05-05T10:00:00"))
        cfg = make_config(tmp_path, zenodo)
        client = _RepeatingPages(per_minute=60_000, retries=1)
        with pytest.raises(UserError, match=r"^harvest stopped: the search answered the same 25 records twice for "
                                            r"pages 1 and 2 of created:\[2016-05-05T10:00:00 TO .*run the same"):
            harvest(cfg, progress=False, client=client)
        assert [p["done"] for p in harvest_positions(cfg)] == [False]
        result = harvest(cfg, progress=False)
    assert result.complete and sorted(harvested_ids(cfg)) == list(range(1, 61))


class _RepeatingPages(HttpClient):
    """A client behind a cache that ignores ``page``: every page of a search is its first."""

    def get(self, url: str, **kwargs: object):  # the parent's type
        params = {k: v for k, v in dict(kwargs.pop("params", None) or {}).items() if k != "page"}  # type: ignore[call-overload]
        return super().get(url, params=params, **kwargs)


def test_more_records_in_one_second_than_a_query_answers_are_named_and_the_harvest_goes_on(tmp_path: Path) -> None:
    with ZenodoDouble(page_cap_anonymous=25, window=50) as zenodo:
        for i in range(1, 61):  # sixty records in one second: the search answers the first fifty
            zenodo.add_record(ZenodoDouble.make_hit(i, created="2016-05-05T10:00:00"))
        for i in range(61, 71):  # and records after that second
            zenodo.add_record(ZenodoDouble.make_hit(i, created=f"2017-0{i % 9 + 1}-01"))
        cfg = make_config(tmp_path, zenodo, search_window=50)
        result = harvest(cfg, progress=False)
    ids = harvested_ids(cfg)
    assert len(ids) == 60 and set(range(61, 71)) <= set(ids)  # the later records were not lost with that second
    assert result.complete
    assert result.notes == ["more than 50 records in created:[2016-05-05T10:00:00 TO 2016-05-05T10:00:01}: the rest "
                            "of them cannot be reached (Zenodo answers at most 50 per query)"]
    assert "cannot be reached" in format_summary(result)


def test_verified_owners_first_loses_no_record(tmp_path: Path) -> None:
    """Zenodo's ``oldest`` puts verified owners first: a harvest that trusts the order skips records."""
    with ZenodoDouble(page_cap_anonymous=25) as zenodo:
        for i in range(1, 121):
            zenodo.add_record(ZenodoDouble.make_hit(i, created=created(i)), verified=i % 3 == 0)
        cfg = make_config(tmp_path, zenodo)
        harvest(cfg, progress=False)
        assert sorted(harvested_ids(cfg)) == list(range(1, 121))
        assert all(r.accept == "application/json" for r in zenodo.requests)
