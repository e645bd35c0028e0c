"""Fuzz target: 10,000+ generated cases through the WARC reader and the extractor.

Each case is checked by ``tests/support/fuzz_targets.py`` (no exception escapes; every record is a row or
a counted skip; every page keeps a row with a reason). Failures are counted, not raised, so one
run reports how many cases ran and how many broke; the first few are printed with their input.

    PYTHONPATH=$PWD python bench/fuzz.py [--warc 6000] [--extract 4000] [--seed 1]

Last lines: ``fuzz_cases: N`` and ``fuzz_crashes: M`` (crashes = exceptions + broken invariants).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, bench/ comes first on sys.path, where bench/tokenize.py would shadow the
# standard library's tokenize module (imported by traceback, inspect, ...); the repository root
# goes there instead, before any of those imports.
if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections import Counter  # noqa: E402

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402

from tests.conftest import shared_data_dir  # noqa: E402
from tests.support.fuzz_targets import check_extract, check_warc, html_cases, warc_cases  # noqa: E402


def run(name: str, strategy, target, examples: int, rng_seed: int, counts: Counter, failures: list) -> None:
    """Drive ``target`` over ``examples`` generated cases without shrinking; count what breaks."""

    @seed(rng_seed)
    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def case(value) -> None:
        counts[f"{name}_cases"] += 1
        try:
            target(value)
        except AssertionError as e:
            counts[f"{name}_violations"] += 1
            failures.append((name, value, f"AssertionError: {e}"))
        except Exception:  # noqa: BLE001 - counting every crash is the point
            counts[f"{name}_exceptions"] += 1
            failures.append((name, value, traceback.format_exc(limit=4)))

    case()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warc", type=int, default=6000, help="generated WARC files")
    parser.add_argument("--extract", type=int, default=4000, help="generated extraction batches (4 pages each)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    data_dir = shared_data_dir()
    if not data_dir.is_dir():
        print(f"{data_dir} not found: the WARC cases are built from its real records", file=sys.stderr)
        return 2
    from hypothesis import strategies as st

    counts: Counter = Counter()
    failures: list = []
    start = time.perf_counter()
    run("warc", warc_cases(str(data_dir)), check_warc, args.warc, args.seed, counts, failures)
    warc_s = time.perf_counter() - start
    batches = st.lists(html_cases(), min_size=1, max_size=4)
    run("extract", batches, check_extract, args.extract, args.seed, counts, failures)
    total_s = time.perf_counter() - start
    for name, value, error in failures[:5]:
        print(f"--- {name} failure, input {value!r:.300}\n{error}")
    cases = counts["warc_cases"] + counts["extract_cases"]
    crashes = sum(v for k, v in counts.items() if k.endswith(("_violations", "_exceptions")))
    print(
        f"warc: {counts['warc_cases']} cases in {warc_s:.0f}s, {counts['warc_exceptions']} exceptions, "
        f"{counts['warc_violations']} broken invariants"
    )
    print(
        f"extract: {counts['extract_cases']} batches in {total_s - warc_s:.0f}s, "
        f"{counts['extract_exceptions']} exceptions, {counts['extract_violations']} broken invariants"
    )
    print(f"fuzz_cases: {cases}")
    print(f"fuzz_crashes: {crashes}")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
