"""The ``raypipe`` command: ``run CONFIG``, ``crawl CONFIG`` (documentation sites) and ``status OUTPUT``."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from raypipe.config import ConfigError, load_config
from raypipe.storage import StorageError, redact


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def print_summary(stats: dict) -> None:
    print(f"\noutput: {stats['output']}")
    print("funnel:")
    for step in stats["funnel"]:
        print(f"  {step['stage']:<24} {step['documents']:>12,}")
    mix = stats.get("mix")
    if mix:
        print(f"manifest: {mix['shards']} shards, {mix['documents']:,} documents, {mix['tokens']:,} tokens")
        for stream, tokens in sorted(mix["tokens_by_stream"].items()):
            print(f"  {stream:<8} {tokens:>14,} tokens ({tokens / max(1, mix['tokens']):.1%})")


def cmd_run(args: argparse.Namespace) -> int:
    from raypipe.pipeline import InputsFailed, run

    cfg = load_config(args.config, args.set)
    try:
        stats = run(cfg)
    except InputsFailed as e:
        print(f"raypipe: error: {redact(str(e))}; rerun to read them (stats.json lists them)", file=sys.stderr)
        return 1
    print_summary(stats)
    return 0


def cmd_crawl(args: argparse.Namespace) -> int:
    from raypipe.crawl import crawl_command

    print(json.dumps(crawl_command(args.config, args.set), indent=2, sort_keys=True))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print each phase's progress (files, docs, rate, elapsed, ETA) from the run state under OUTPUT."""
    from raypipe.config import StorageConfig
    from raypipe.status import status_lines
    from raypipe.storage import OutputStore

    lines = status_lines(OutputStore(args.output, StorageConfig()))
    if lines is None:
        print(f"no run state under {args.output}")
        return 1
    print("\n".join(lines))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raypipe", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run the whole pipeline for a config file")
    run_p.add_argument("config", help="YAML config file")
    run_p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    run_p.set_defaults(func=cmd_run)
    crawl_p = sub.add_parser("crawl", help="crawl documentation sites (crawl.start_urls) into WARC files and seeds")
    crawl_p.add_argument("config", help="YAML config file")
    crawl_p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    crawl_p.set_defaults(func=cmd_crawl)
    status_p = sub.add_parser("status", help="print each phase's progress for a running or finished run")
    status_p.add_argument("output", help="the run's output prefix (s3://... or a directory)")
    status_p.set_defaults(func=cmd_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    _setup_logging()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, StorageError) as e:
        print(f"raypipe: error: {redact(str(e))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
