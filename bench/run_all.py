"""``make bench``: raypipe against DataTrove, NeMo Curator and the raw floors, in one run on the same inputs.

1. builds (once, cached under ``.bench/``) a WARC corpus from ``../shared/data/html`` at 1x, 4x, 16x
   and the peers' venvs (DataTrove, NeMo Curator; a peer whose install fails is skipped);
2. extraction docs/s/core: raypipe vs floor vs DataTrove vs NeMo Curator (``bench/extract.py``);
3. end-to-end CPU (extract, filter, dedup, tokenize) vs DataTrove (``bench/e2e.py``);
4. peak RSS of one WARC read task at 1x, 4x, 16x input (``bench/rss.py``);
5. the component benchmarks present in ``bench/`` (retrieval vs plain encode, tokenizer vs plain loop);
6. writes ``bench/results/bench.json`` and ``bench/results/bench.md`` (``--quick``: under
   ``.bench/results-quick/``, leaving the committed results alone) and ends with ``NAME: <ratio>x`` lines.

    make bench                                            # full run (< 15 min on 2 cores once installed)
    PYTHONPATH=$PWD .venv/bin/python bench/run_all.py --quick   # smoke run on 100 pages
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

# Run as a script, bench/ comes first on sys.path, where bench/tokenize.py would shadow the
# standard library's tokenize module; the repository root goes there instead.
if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.corpus import ensure_corpus  # noqa: E402
from bench.e2e import STAGES, datatrove_e2e, e2e_ratio, raypipe_e2e  # noqa: E402
from bench.extract import extraction_ratios, measure_extraction  # noqa: E402
from bench.measure import Measure  # noqa: E402
from bench.peers import BENCH_DIR  # noqa: E402
from bench.rss import peak_rss  # noqa: E402
from bench.tables import markdown_measures, markdown_table, print_ratios, print_table, ratio_text  # noqa: E402

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SCALES = (1, 4, 16)
# Benchmarks of single stages that teammates keep beside this one: (label, script, args).
COMPONENTS = (("retrieve", "retrieve.py", []), ("tokenize", "tokenize.py", []))
RATIO_LINE = re.compile(r"^(?P<name>[^:]+): (?P<value>[0-9.]+)x\s*$")


def run_components(quick: bool, log=print) -> tuple[dict[str, str], dict[str, float | str]]:
    """Run each component benchmark present; returns (status per component, its ratio lines)."""
    status: dict[str, str] = {}
    ratios: dict[str, float | str] = {}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    for label, script, args in COMPONENTS:
        path = BENCH / script
        if not path.is_file():
            status[label] = f"n/a (bench/{script} is not in this checkout)"
            continue
        if quick:
            status[label] = "skipped in --quick"
            continue
        log(f"components: running bench/{script}")
        # as a module from the repository root: run as a file, bench/ would come first on sys.path,
        # where bench/tokenize.py shadows the standard library's tokenize module
        done = subprocess.run(
            [sys.executable, "-m", f"bench.{path.stem}", *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            timeout=1200,
        )
        found = [m for m in map(RATIO_LINE.match, done.stdout.splitlines()) if m]
        if done.returncode != 0 or not found:
            tail = "\n    ".join((done.stderr or done.stdout).strip().splitlines()[-5:])
            status[label] = f"failed (exit {done.returncode})"
            log(f"components: bench/{script} failed:\n    {tail}")
            continue
        status[label] = "ok"
        for m in found:
            ratios[m["name"]] = float(m["value"])
    return status, ratios


def environment() -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit.stdout.strip() or None,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
    }


def _as_json(results: dict) -> dict:
    return {k: v.to_json() if isinstance(v, Measure) else v for k, v in results.items()}


def markdown(report: dict, extraction: dict, ours: dict, theirs: dict) -> str:
    env, corpus = report["environment"], report["corpus"]
    one = corpus["1"]
    parts = [
        "# raypipe benchmark results",
        "",
        f"Measured {env['date']} at commit `{env['commit']}` on {env['cpus']} cores (load average "
        f"{env['load_avg_start'][0]} at the start, {env['load_avg_end'][0]} at the end: a shared machine, so rates are "
        "documents per CPU-second of the process and its children, i.e. docs/s per core; wall seconds shown too). "
        f"Input: {one['pages']} real pages from `../shared/data/html` wrapped as WARC "
        f"({one['html_bytes'] / 2**20:.0f} MiB of HTML, {one['file_bytes'] / 2**20:.0f} MiB gzipped). "
        "Reproduce with `make bench`.",
        "",
        "## Extraction",
        "",
        markdown_measures(extraction),
        "",
        "## End to end (CPU)",
        "",
        markdown_table(
            ("stage", "raypipe docs/s/core", "raypipe CPU s", "DataTrove docs/s/core", "DataTrove CPU s"),
            [(s, *_stage_cells(ours.get(s, "n/a")), *_stage_cells(theirs.get(s, "n/a"))) for s in STAGES],
        ),
        "",
        "## Peak RSS of one WARC read task",
        "",
        markdown_table(
            ("input", "pages", "HTML MiB", "WARC.gz MiB", "baseline MiB", "peak MiB", "growth MiB"),
            [
                (
                    f"{s}x",
                    str(r["pages"]),
                    f"{corpus[s]['html_bytes'] / 2**20:.0f}",
                    f"{corpus[s]['file_bytes'] / 2**20:.0f}",
                    f"{r['baseline_mib']:.0f}",
                    f"{r['peak_mib']:.0f}",
                    f"{r['growth_mib']:.0f}",
                )
                for s, r in report["rss"].items()
            ],
        ),
        "",
        "## Ratios",
        "",
        markdown_table(("ratio", "value"), [(k, ratio_text(v)) for k, v in report["ratios"].items()]),
        "",
    ]
    return "\n".join(parts)


def _stage_cells(m: Measure | str) -> tuple[str, str]:
    return (m, "") if isinstance(m, str) else (f"{m.rate:.1f}", f"{m.cpu_s:.2f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data", help="../shared/data")
    ap.add_argument("--quick", action="store_true", help="smoke run: 100 pages, one round, no component benches")
    ap.add_argument("--out", type=Path, help="results folder (default bench/results, or .bench/results-quick)")
    args = ap.parse_args(argv)
    out = args.out or (BENCH_DIR / "results-quick" if args.quick else BENCH / "results")
    started = time.perf_counter()
    report: dict = {"environment": environment(), "quick": args.quick}

    corpus = ensure_corpus(args.shared, SCALES, limit=100 if args.quick else None)
    report["corpus"] = {str(s): {k: v for k, v in c.items() if k != "path"} for s, c in corpus.items()}
    warc = Path(corpus[1]["path"])

    print(f"\n== extraction on {corpus[1]['pages']} pages", flush=True)
    extraction = measure_extraction(warc, rounds=1 if args.quick else 3)
    print_table(extraction, "extraction (docs/s/core = input pages per CPU-second)")

    print(f"\n== end to end on {corpus[1]['pages']} pages", flush=True)
    ours = raypipe_e2e(warc)
    theirs = datatrove_e2e(warc)
    print_table({f"raypipe {k}": v for k, v in ours.items()}, "end to end, raypipe")
    print_table({f"datatrove {k}": v for k, v in theirs.items()}, "end to end, DataTrove")

    print("\n== peak RSS of one read task", flush=True)
    rss = {}
    for scale in SCALES:
        rss[str(scale)] = peak_rss(Path(corpus[scale]["path"]))
        r = rss[str(scale)]
        print(f"  {scale:>2}x: {r['pages']:>6} pages  peak {r['peak_mib']:.0f} MiB (baseline {r['baseline_mib']:.0f})")

    print("\n== component benchmarks", flush=True)
    components, component_ratios = run_components(args.quick)
    for label, state in components.items():
        print(f"  {label}: {state}")

    ratios = extraction_ratios(extraction)
    name, value = e2e_ratio(ours, theirs)
    ratios[name] = value
    ratios["read task peak rss 16x vs 1x"] = rss["16"]["peak_mib"] / rss["1"]["peak_mib"]
    ratios.update(component_ratios)

    report["environment"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["environment"]["bench_seconds"] = round(time.perf_counter() - started, 1)
    report.update(
        extraction=_as_json(extraction),
        e2e={"raypipe": _as_json(ours), "datatrove": _as_json(theirs)},
        rss=rss,
        components=components,
        ratios=ratios,
        targets={"extract vs datatrove": ">= 10x", "extract vs floor": ">= 0.60x"},
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    (out / "bench.md").write_text(markdown(report, extraction, ours, theirs))
    print(f"\nresults: {out / 'bench.json'} and {out / 'bench.md'} ({report['environment']['bench_seconds']:.0f}s)")
    print_ratios(ratios)
    return 0


if __name__ == "__main__":
    sys.exit(main())
