"""The ``raypipe`` command: ``run CONFIG``, ``crawl CONFIG`` (documentation sites), ``status OUTPUT``
and ``mix OUTPUT`` (the ``--data-path`` for a ratio)."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from raypipe.config import ConfigError, load_config
from raypipe.store.storage import StorageError, redact


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
    from raypipe.store.storage import OutputStore

    lines = status_lines(OutputStore(args.output, StorageConfig()))
    if lines is None:
        print(f"no run state under {args.output}")
        return 1
    print("\n".join(lines))
    return 0


def cmd_mix(args: argparse.Namespace) -> int:
    """Print Megatron's ``--data-path`` drawing OUTPUT's shard sets at ``--ratio`` (reads only manifest.json)."""
    from raypipe.config import StorageConfig
    from raypipe.mix import MixError, mix_data_path, parse_ratio
    from raypipe.store.storage import OutputStore

    store = OutputStore(args.output, StorageConfig())
    if not store.exists("manifest.json"):
        print(f"raypipe: error: no manifest.json under {args.output}", file=sys.stderr)
        return 1
    manifest = json.loads(store.read_bytes("manifest.json"))
    try:
        print(mix_data_path(manifest, parse_ratio(args.ratio), args.root))
    except MixError as e:
        print(f"raypipe: error: {e}", file=sys.stderr)
        return 2
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
    mix_p = sub.add_parser("mix", help="print the Megatron --data-path that draws an output's streams at a ratio")
    mix_p.add_argument("output", help="a finished run's output prefix (s3://... or a directory)")
    mix_p.add_argument("--ratio", required=True, help="stream=share pairs, e.g. agent=1,code=1,text=1")
    mix_p.add_argument("--root", default=None, help="prefix for the shard paths (where the trainer sees the output)")
    mix_p.set_defaults(func=cmd_mix)
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
