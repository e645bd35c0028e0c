"""Entry point for ``ray job submit ... -- python jobs/build_forge.py --config FILE [--set k=v ...]``.

Under ``ray job submit`` it joins the cluster it was submitted to (RAY_ADDRESS); run directly, it
starts a local Ray. Same code path either way.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the working dir travels with the job

from raypipe.cli import main  # noqa: E402


def parse(argv: list[str]) -> list[str]:
    parser = argparse.ArgumentParser(description="Build an agent-oriented pre-training corpus.")
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    args = parser.parse_args(argv)
    return ["run", args.config, *[x for s in args.set for x in ("--set", s)]]


if __name__ == "__main__":
    sys.exit(main(parse(sys.argv[1:])))
