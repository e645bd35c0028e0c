"""Runs inside ``.bench/venv-nemo_curator`` (never imports raypipe): NeMo Curator's Common Crawl
extraction on the benchmark WARC.

Its iterate-extract stage with its own pieces: ``CommonCrawlWarcIterator`` (warcio) and
``CommonCrawlHTMLExtractor`` with the resiliparse algorithm (its default, jusText, is slower; the
resiliparse one is the fairer peer). Timed twice:

- ``in_process``: the stage's ``process`` called directly, one process (its per-core cost);
- ``ray_data``: the same stage through ``Pipeline.run`` on ``RayDataExecutor`` with a local Ray of
  one CPU (its default executor needs more CPUs than this machine has). CPU seconds are summed over
  the driver and every Ray process it started (psutil), from after ``ray.init`` to the end.

Prints one JSON line ``{mode: {docs_in, docs_out, wall_s, cpu_s}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path

import psutil

os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")


class TreeCPU:
    """CPU seconds used by this process and its descendants while it runs (Ray starts and ends
    worker processes mid-run, so their CPU is sampled every 0.1 s by a thread and summed per process)."""

    def __init__(self) -> None:
        self.first: dict[tuple[int, float], float] = {}
        self.last: dict[tuple[int, float], float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        for p in [me, *me.children(recursive=True)]:
            try:
                key = (p.pid, p.create_time())
                t = p.cpu_times()
            except psutil.Error:
                continue
            self.first.setdefault(key, t.user + t.system)
            self.last[key] = t.user + t.system

    def _loop(self) -> None:
        while not self.stop.wait(0.1):
            self._sample()

    def __enter__(self) -> TreeCPU:
        self._sample()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self._sample()

    @property
    def seconds(self) -> float:
        return sum(self.last[k] - self.first[k] for k in self.last)


def make_stage():
    from nemo_curator.stages.text.download.base.iterator import DocumentIterateExtractStage
    from nemo_curator.stages.text.download.common_crawl.extract import CommonCrawlHTMLExtractor
    from nemo_curator.stages.text.download.common_crawl.warc_iterator import CommonCrawlWarcIterator

    return DocumentIterateExtractStage(
        iterator=CommonCrawlWarcIterator(), extractor=CommonCrawlHTMLExtractor(algorithm="resiliparse")
    )


def responses(warc: Path) -> int:
    from warcio.archiveiterator import ArchiveIterator

    with warc.open("rb") as f:
        return sum(1 for r in ArchiveIterator(f) if r.rec_type == "response")


def in_process(warc: Path, docs_in: int, rounds: int) -> dict:
    """The least CPU time of ``rounds`` calls (raypipe and the floor get the same treatment)."""
    from nemo_curator.tasks import FileGroupTask

    stage = make_stage()
    stage.setup()
    runs = []
    for _ in range(rounds):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        batch = stage.process(FileGroupTask(dataset_name="bench", data=[str(warc)]))
        runs.append(
            {"docs_out": len(batch.data), "wall_s": time.perf_counter() - wall0, "cpu_s": time.process_time() - cpu0}
        )
    best = min(runs, key=lambda r: r["cpu_s"])
    return {"docs_in": docs_in, **best, "details": {"runs_cpu_s": [round(r["cpu_s"], 3) for r in runs]}}


def ray_data(warc: Path, docs_in: int, rounds: int) -> dict:
    """One run (Ray's start-up is outside the timing; its daemons' CPU during the run is inside)."""
    import ray
    from nemo_curator.backends.ray_data import RayDataExecutor
    from nemo_curator.pipeline import Pipeline
    from nemo_curator.tasks import FileGroupTask

    ray.init(num_cpus=1, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        pipeline = Pipeline(name="bench_extract", stages=[make_stage()])
        wall0 = time.perf_counter()
        with TreeCPU() as cpu:
            results = pipeline.run(
                executor=RayDataExecutor(), initial_tasks=[FileGroupTask(dataset_name="bench", data=[str(warc)])]
            )
        wall = time.perf_counter() - wall0
    finally:
        ray.shutdown()
    return {
        "docs_in": docs_in,
        "docs_out": sum(len(t.data) for t in results or []),
        "wall_s": wall,
        "cpu_s": cpu.seconds,
        "details": {"note": "CPU of the driver and every Ray process, Ray's own daemons included"},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("warc", type=Path)
    ap.add_argument("--modes", default="in_process,ray_data")
    ap.add_argument("--rounds", type=int, default=1, help="in_process: calls, the least CPU time is reported")
    args = ap.parse_args()
    docs_in = responses(args.warc)
    runs = {"in_process": in_process, "ray_data": ray_data}
    print(json.dumps({mode: runs[mode](args.warc, docs_in, args.rounds) for mode in args.modes.split(",")}))


if __name__ == "__main__":
    main()
