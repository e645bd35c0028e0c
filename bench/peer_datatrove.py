"""Runs inside ``.bench/venv-datatrove`` (never imports raypipe): DataTrove on the benchmark WARC.

``extract``: WarcReader + Trafilatura with DataTrove's defaults (favour_precision, 1 s timeout in
its sandbox process), one task, one worker; ``--extractor resiliparse``: the same with DataTrove's own
``Resiliparse`` extractor (main content, its defaults), the fair peer of raypipe's resiliparse path.
DataTrove releases up to 0.10.1 (the newest on PyPI) do not ship that extractor; the script then
prints ``{"unavailable": reason}`` instead of a measure. ``e2e``: the closest DataTrove pipeline to raypipe's
CPU path, as its own examples build it, each step timed on its own:

- extract+filter: WarcReader, Trafilatura, GopherRepetitionFilter, GopherQualityFilter, JsonlWriter
  (no LanguageFilter: its fastText model is downloaded at run time and this machine is offline);
- dedup: MinHash signatures, buckets, clusters, filter (DataTrove's four-stage MinHash dedup);
- tokenize: DocumentTokenizer with the tokenizer.json it is given (the same LLaMA-3 vocabulary).

Prints one JSON line: per step ``docs_in``, ``docs_out``, ``wall_s`` and ``cpu_s`` (this process
and its children, which is where Trafilatura's sandbox runs), plus DataTrove's own step stats.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.extractors import Trafilatura
from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
from datatrove.pipeline.readers import JsonlReader, WarcReader
from datatrove.pipeline.tokens import DocumentTokenizer
from datatrove.pipeline.writers import JsonlWriter


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_step(name: str, pipeline: list, logs: Path, tasks: int = 1) -> dict:
    """Run one DataTrove pipeline (``tasks`` tasks one after another in this process) and time it."""
    executor = LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1, logging_dir=str(logs / name))
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    executor.run()
    wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
    stats = json.loads((logs / name / "stats.json").read_text())
    return {"wall_s": wall, "cpu_s": cpu, "stats": stats}


def _counts(stats: list[dict], first: str, last: str) -> tuple[int, int]:
    """Documents into the step named ``first`` and out of the step named ``last`` (DataTrove stats)."""
    by_name = {s["name"]: s["stats"] for s in stats}

    def pick(name: str, key: str) -> int:
        for step, values in by_name.items():
            if name in step:
                value = values.get(key, 0)
                return int(value["total"] if isinstance(value, dict) else value)
        return 0

    return pick(first, "total") or pick(first, "documents"), pick(last, "forwarded") or pick(last, "documents")


def _extractor(name: str) -> tuple[type, str] | str:
    """(DataTrove's extractor class, its step name) or why this DataTrove has none by that name."""
    if name == "trafilatura":
        return Trafilatura, "Trafilatura"
    import datatrove.pipeline.extractors as extractors

    if not hasattr(extractors, "Resiliparse"):
        from importlib.metadata import version

        return f"datatrove {version('datatrove')} has no Resiliparse extractor (it is on DataTrove's main branch only)"
    return extractors.Resiliparse, "Resiliparse"


def extract(warc: Path, work: Path, rounds: int, extractor: str = "trafilatura") -> dict:
    """The least CPU time of ``rounds`` runs (raypipe and the floor get the same treatment)."""
    found = _extractor(extractor)
    if isinstance(found, str):
        return {"unavailable": found}
    cls, step_name = found
    steps = [
        run_step(f"extract{i}", [WarcReader(str(warc.parent), glob_pattern=warc.name), cls()], work)
        for i in range(rounds)
    ]
    step = min(steps, key=lambda s: s["cpu_s"])
    docs_in, docs_out = _counts(step["stats"], step_name, step_name)
    return {"extract": {**step, "docs_in": docs_in, "docs_out": docs_out, "runs_cpu_s": [s["cpu_s"] for s in steps]}}


def e2e(warc: Path, work: Path, tokenizer: str) -> dict:
    out: dict = {}
    filtered, sigs, buckets, removed, deduped = (work / d for d in ("filtered", "sigs", "buckets", "removed", "dedup"))
    step = run_step(
        "extract_filter",
        [
            WarcReader(str(warc.parent), glob_pattern=warc.name),
            Trafilatura(),
            GopherRepetitionFilter(),
            GopherQualityFilter(),
            JsonlWriter(str(filtered)),
        ],
        work,
    )
    docs_in, docs_out = _counts(step["stats"], "Trafilatura", "Gopher Quality")
    out["extract+filter"] = {**step, "docs_in": docs_in, "docs_out": docs_out}
    parts = [
        run_step("dedup_sigs", [JsonlReader(str(filtered)), MinhashDedupSignature(str(sigs))], work),
        # one task per bucket, as DataTrove requires (run one after another here)
        run_step("dedup_buckets", [MinhashDedupBuckets(str(sigs), str(buckets))], work, MinhashConfig().num_buckets),
        run_step("dedup_cluster", [MinhashDedupCluster(str(buckets), str(removed))], work),
        run_step(
            "dedup_filter",
            [JsonlReader(str(filtered)), MinhashDedupFilter(str(removed)), JsonlWriter(str(deduped))],
            work,
        ),
    ]
    kept = _counts(parts[-1]["stats"], "MinHash", "MinHash")[1]
    out["dedup"] = {
        "wall_s": sum(p["wall_s"] for p in parts),
        "cpu_s": sum(p["cpu_s"] for p in parts),
        "docs_in": docs_out,
        "docs_out": kept,
        "stats": [s for p in parts for s in p["stats"]],
    }
    step = run_step(
        "tokenize",
        [
            JsonlReader(str(deduped)),
            DocumentTokenizer(str(work / "tokens"), tokenizer_name_or_path=tokenizer, eos_token="<|end_of_text|>"),
        ],
        work,
    )
    out["tokenize"] = {**step, "docs_in": kept, "docs_out": _counts(step["stats"], "Tokeniz", "Tokeniz")[1] or kept}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["extract", "e2e"])
    ap.add_argument("warc", type=Path)
    ap.add_argument("--tokenizer", help="tokenizer.json for the e2e tokenize step")
    ap.add_argument("--rounds", type=int, default=1, help="extract: runs, the least CPU time is reported")
    ap.add_argument("--extractor", choices=["trafilatura", "resiliparse"], default="trafilatura", help="extract mode")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-datatrove-") as tmp:
        work = Path(tmp)
        result = (
            extract(args.warc, work, args.rounds, args.extractor)
            if args.mode == "extract"
            else e2e(args.warc, work, args.tokenizer)
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
