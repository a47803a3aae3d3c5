"""``zenodo-hpc harvest`` and ``fetch``: what talks to Zenodo before any worker runs (zenodo/harvest.py,
zenodo/fetch.py)."""

from __future__ import annotations

import argparse

from .options import EXIT_ERROR, add_config, add_limit, add_run_dir


def add_harvest(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Search Zenodo for records of zenodo.type (software) and append them to <run>/records.jsonl, "
        "oldest first, unique by id, without those matching zenodo.exclude. More than 10,000 records "
        "are reached by splitting the search into date windows. Resumable: run it again after an "
        "interruption and it continues; run it again when finished and it adds nothing. A harvest that "
        "stops on an error (Zenodo unreachable, or answering other records than asked) exits with status 1 "
        "and is not complete: the same command continues it. With --since, "
        "adds the records created or modified after a date (how a dataset is kept up to date)."
    )
    add_config(parser)
    add_limit(parser)
    parser.add_argument("--api-url", metavar="URL", help="Zenodo API base URL (default: zenodo.api_url)")
    parser.add_argument("--since", metavar="DATE",
                        help="only records created or modified on or after DATE (2024-01-31), appended")
    parser.set_defaults(func=cmd_harvest)


def cmd_harvest(args: argparse.Namespace) -> int:
    from ..core.config import load_config
    from ..zenodo.harvest import format_summary, harvest, parse_since

    cfg = load_config(args.config)
    if args.api_url:
        cfg.zenodo.api_url = args.api_url
    since = parse_since(args.since) if args.since else None
    result = harvest(cfg, limit=args.limit, since=since)
    print(format_summary(result))
    return 0


def add_fetch(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Fetch-first mode: on a login or transfer node with internet, download the archives of every "
        "harvested record that is not complete into RUN_DIR/cache/<id>/, verified against Zenodo's md5 "
        "(or the GitHub release zip when a record has no archive). Workers with fetch.offline: true then "
        "rasterize from the cache without any network. Requests keep to the run's whole budget, the tighter of "
        "zenodo.rate_limit_per_min and zenodo.rate_limit_per_hour (unset: Zenodo's published limits, 60 a "
        "minute and 2,000 an hour for a guest, 100 and 5,000 with a token in zenodo.token_env). Run it again "
        "to retry what failed."
    )
    add_run_dir(parser)
    parser.set_defaults(func=cmd_fetch)


def cmd_fetch(args: argparse.Namespace) -> int:
    from ..core.state import load_run
    from ..zenodo.fetch import fetch_all, format_fetch_summary

    run, cfg = load_run(args.run_dir)
    result = fetch_all(run, cfg)
    print(format_fetch_summary(result, run))
    return EXIT_ERROR if result.everything_failed else 0
