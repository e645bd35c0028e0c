"""Clean-phase benchmark: peak memory at 1x and 8x input, throughput, and near-dedup precision.

Input: real texts from ../shared/data (C4 pages, article bodies, Wikipedia chunks, PyPI code) with
planted exact copies (10%) and near copies (10%: 1% of words changed plus page chrome). The 8x
input holds 8 times as many distinct documents (each further copy of a text has half its words
replaced, so it is no near duplicate) with the same share of planted copies.

Memory: the resident set of the driver plus every process of its Ray cluster (GCS, raylet,
workers), sampled every 0.2 s; the sum over-counts pages shared through the object store, so it
is an upper bound. The phase is memory-bounded when the 8x peak stays far below 8 times the 1x
peak. Throughput is compared with a raw floor measured in the same run: the same fingerprinting
and n-gram matching in this one process, without Ray.

    PYTHONPATH=$PWD /work/main/.venv/bin/python bench/dedup.py [--docs 600] [--budget-mb 64]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import ray
import ray.data

from raypipe.clean import CleanFingerprinter, run_clean
from raypipe.config import RunConfig
from raypipe.storage import OutputStore
from tests.planted import base_texts, benchmark_index, mutate

DATA = Path(os.environ.get("RAYPIPE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def corpus(texts: list[str], scale: int, seed: int = 11) -> pd.DataFrame:
    rng = random.Random(seed)
    # ids sort originals (u) before their exact (x) and near (y) copies: the originals survive
    docs = [t if copy == 0 else mutate(t, 0.5, rng) for copy in range(scale) for t in texts]
    rows = [(f"u{i:07d}", t) for i, t in enumerate(docs)]
    for i, text in enumerate(rng.sample(docs, len(docs) // 10)):
        rows.append((f"x{i:07d}", text))
    for i, text in enumerate(rng.sample(docs, len(docs) // 10)):
        rows.append((f"y{i:07d}", mutate(text, 0.01, rng)))
    frame = pd.DataFrame(rows, columns=["doc_id", "text"])
    return frame.assign(url="https://bench.example/" + frame["doc_id"], stream="text", drop_reason=None)


class PeakRSS:
    """Samples the resident memory of this process and all its descendants (the Ray cluster)."""

    def __init__(self) -> None:
        import psutil  # vendored by Ray (ray/thirdparty_files), importable once ray is imported

        self.root = psutil.Process()
        self.peak_total = 0
        self.peak_process = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = biggest = 0
            for proc in [self.root, *self.root.children(recursive=True)]:
                try:
                    rss = proc.memory_info().rss
                except Exception:  # noqa: BLE001 - a process may exit between listing and reading
                    continue
                total += rss
                biggest = max(biggest, rss)
            self.peak_total = max(self.peak_total, total)
            self.peak_process = max(self.peak_process, biggest)
            self._stop.wait(0.2)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_once(frame: pd.DataFrame, budget_mb: int, index) -> dict:
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", object_store_memory=1 << 30)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        with tempfile.TemporaryDirectory() as out, PeakRSS() as rss:
            cfg = RunConfig(
                input="bench",
                output=out,
                decontam={"benchmarks": str(DATA / "benchmarks")},
                dedup={"memory_budget_mb": budget_mb, "precision_sample": 200},
            )
            started = time.monotonic()
            blocks = [frame.iloc[i::8] for i in range(8)]
            result, stats = run_clean(ray.data.from_pandas(blocks), cfg, OutputStore(out, cfg.storage), index=index)
            labels = result.select_columns(["doc_id", "drop_reason"]).to_pandas().astype(object)
            reasons = labels["drop_reason"].value_counts().to_dict()
            planted = {"duplicate_exact": "x", "duplicate_near": "y"}
            recall = {
                r: round(float((labels.loc[labels["doc_id"].str.startswith(p), "drop_reason"] == r).mean()), 4)
                for r, p in planted.items()
            }
            false_drops = int((labels["doc_id"].str.startswith("u") & labels["drop_reason"].notna()).sum())
            elapsed = time.monotonic() - started
    finally:
        ray.shutdown()
    return {
        "documents": len(frame),
        "megabytes": round(frame["text"].str.len().sum() / 1e6, 1),
        "seconds": round(elapsed, 1),
        "docs_per_s": round(len(frame) / elapsed, 1),
        "peak_rss_mb": round(rss.peak_total / 2**20),
        "peak_process_rss_mb": round(rss.peak_process / 2**20),
        "reasons": reasons,
        "planted_recall": recall,
        "originals_dropped": false_drops,
        "stats": stats,
    }


def floor_docs_per_s(frame: pd.DataFrame, index) -> float:
    """Single-process fingerprinting + n-gram matching, no Ray: the raw floor."""
    stage = CleanFingerprinter(
        RunConfig(input="x", output="/tmp/x").dedup, RunConfig(input="x", output="/tmp/x").decontam, index
    )
    stage.setup()
    table = pa.Table.from_pandas(frame, preserve_index=False)
    started = time.monotonic()
    for start in range(0, len(frame), 256):
        stage(table.slice(start, 256))
    return len(frame) / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=600, help="distinct base texts in the 1x input")
    parser.add_argument("--budget-mb", type=int, default=64, help="dedup.memory_budget_mb")
    args = parser.parse_args()
    texts = [t for _, t in base_texts(DATA)]
    random.Random(5).shuffle(texts)
    texts = texts[: args.docs]
    index = benchmark_index(DATA)
    small, large = corpus(texts, 1), corpus(texts, 8)
    floor = floor_docs_per_s(small, index)
    one = run_once(small, args.budget_mb, index)
    eight = run_once(large, args.budget_mb, index)
    for name, res in (("1x", one), ("8x", eight)):
        near = res["stats"]["near_dedup"]
        print(
            f"{name}: {res['documents']} docs {res['megabytes']} MB in {res['seconds']} s "
            f"({res['docs_per_s']} docs/s); peak RSS driver+cluster {res['peak_rss_mb']} MiB, "
            f"largest process {res['peak_process_rss_mb']} MiB; partitions {res['stats']['partitions']}; "
            f"drop reasons {res['reasons']}; stage seconds {res['stats']['seconds']}"
        )
        print(
            f"{name} planted copies dropped (recall): {res['planted_recall']}; "
            f"originals dropped: {res['originals_dropped']}"
        )
        print(f"{name} precision: {json.dumps(near['precision'])}; cc rounds {near['components_rounds']}")
    print(f"single-process floor (fingerprint + decontam, no Ray): {floor:.1f} docs/s")
    print(f"dedup_peak_rss_8x_vs_1x: {eight['peak_rss_mb'] / one['peak_rss_mb']:.2f}x")
    print(f"dedup_largest_process_rss_8x_vs_1x: {eight['peak_process_rss_mb'] / one['peak_process_rss_mb']:.2f}x")
    print(f"dedup_throughput_8x_vs_floor: {eight['docs_per_s'] / floor:.2f}x")


if __name__ == "__main__":
    main()
