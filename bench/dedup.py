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

Near-duplicate recall at the threshold: further real texts, each paired with a copy whose share of
changed words is drawn so that the pairs' exact 5-gram Jaccard spreads over 0.55-0.95. Recall is
the share of pairs with exact Jaccard in [0.70, 0.80) whose copy the phase drops as a near
duplicate of its original (FineWeb aims its MinHash at 0.75); precision is the share of merged
pairs (the phase's own sample of verified candidates, and these planted pairs) whose exact Jaccard
reaches ``dedup.threshold``. ``--verify-margin`` sets ``dedup.verify_margin`` (1 checks every
candidate by exact Jaccard, 0 trusts the MinHash estimate alone, as before it existed).

    PYTHONPATH=$PWD /work/main/.venv/bin/python -m bench.dedup [--docs 600] [--budget-mb 64] [--pairs 400]
        [--verify-margin 0.15]
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

from raypipe.clean.fingerprint import CleanFingerprinter
from raypipe.config import RunConfig
from raypipe.dedup.precision import exact_jaccard
from raypipe.phases.clean import clean_documents
from raypipe.store.storage import OutputStore
from tests.support.planted import base_texts, benchmark_index, mutate

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


def jaccard_pairs(texts: list[str], seed: int = 13) -> pd.DataFrame:
    """(original, copy) pairs over a spread of exact 5-gram Jaccard: originals ``j<i>a``, copies
    ``j<i>b`` (the copy's id sorts after its original, so the original survives)."""
    rng = random.Random(seed)
    rows = []
    for i, text in enumerate(texts):
        copy = mutate(text, rng.uniform(0.01, 0.09), rng)
        rows += [(f"j{i:06d}a", text, None), (f"j{i:06d}b", copy, exact_jaccard(text, copy, 5))]
    frame = pd.DataFrame(rows, columns=["doc_id", "text", "exact_jaccard"])
    return frame.assign(url="https://bench.example/" + frame["doc_id"], stream="text", drop_reason=None)


def near_recall(labels: pd.DataFrame, pairs: pd.DataFrame, threshold: float) -> dict:
    """Recall on planted pairs by exact-Jaccard band, and the precision of the planted pairs merged."""
    copies = pairs[pairs["exact_jaccard"].notna()].set_index("doc_id")
    got = labels.set_index("doc_id").loc[copies.index]
    merged = got["drop_reason"].eq("duplicate_near") & got["duplicate_of"].eq(copies.index.str[:-1] + "a")
    jac = copies["exact_jaccard"]
    out = {}
    for lo, hi in ((0.55, 0.7), (0.7, 0.75), (0.75, 0.8), (0.7, 0.8), (0.8, 1.01)):
        band = (jac >= lo) & (jac < hi)
        out[f"{lo:.2f}-{min(hi, 1):.2f}"] = {"pairs": int(band.sum()), "merged": int(merged[band].sum())}
    out["precision_of_merged"] = round(float((jac[merged] >= threshold).mean()), 4) if merged.any() else None
    return out


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


def run_once(frame: pd.DataFrame, budget_mb: int, index, pairs: pd.DataFrame, verify_margin: float) -> dict:
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", object_store_memory=1 << 30)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        with tempfile.TemporaryDirectory() as out, PeakRSS() as rss:
            cfg = RunConfig(
                input="bench",
                output=out,
                decontam={"benchmarks": str(DATA / "benchmarks")},
                dedup={"memory_budget_mb": budget_mb, "precision_sample": 1000, "verify_margin": verify_margin},
            )
            started = time.monotonic()
            docs = pd.concat([frame, pairs.drop(columns=["exact_jaccard"])], ignore_index=True)
            blocks = [docs.iloc[i::8] for i in range(8)]
            result, stats = clean_documents(
                ray.data.from_pandas(blocks), cfg, OutputStore(out, cfg.storage), index=index
            )
            labels = result.select_columns(["doc_id", "drop_reason", "duplicate_of"]).to_pandas().astype(object)
            # Kept rows read back as None or pd.NA: compare with .eq and fill, or NA drops out of the tally
            labels["drop_reason"] = labels["drop_reason"].where(labels["drop_reason"].notna(), "kept")
            reasons = labels["drop_reason"].value_counts().to_dict()
            planted = {"duplicate_exact": "x", "duplicate_near": "y"}
            recall = {
                r: round(float(labels.loc[labels["doc_id"].str.startswith(p), "drop_reason"].eq(r).mean()), 4)
                for r, p in planted.items()
            }
            originals = labels["doc_id"].str.startswith("u") | labels["doc_id"].str.endswith("a")
            false_drops = int((originals & labels["drop_reason"].ne("kept")).sum())
            jaccard = near_recall(labels, pairs, cfg.dedup.threshold)
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
        "jaccard_pairs": jaccard,
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
    parser.add_argument("--pairs", type=int, default=400, help="planted pairs over a spread of exact Jaccard")
    parser.add_argument("--verify-margin", type=float, default=0.15, help="dedup.verify_margin")
    args = parser.parse_args()
    texts = [t for _, t in base_texts(DATA)]
    random.Random(5).shuffle(texts)
    pairs = jaccard_pairs([t for t in texts[args.docs :] if len(t.split()) >= 300][: args.pairs])
    texts = texts[: args.docs]
    index = benchmark_index(DATA)
    small, large = corpus(texts, 1), corpus(texts, 8)
    floor = floor_docs_per_s(small, index)
    one = run_once(small, args.budget_mb, index, pairs, args.verify_margin)
    eight = run_once(large, args.budget_mb, index, pairs, args.verify_margin)
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
        print(
            f"{name} candidate pairs {near['candidate_pairs']}, checked by exact Jaccard "
            f"{near.get('exact_checked_pairs')}, verified {near['verified_pairs']}"
        )
        bands = res["jaccard_pairs"]
        band = bands["0.70-0.80"]
        print(
            f"{name} near-dup recall on pairs at exact Jaccard 0.70-0.80: {band['merged']}/{band['pairs']} = "
            f"{band['merged'] / max(1, band['pairs']):.3f}; precision (verified candidates, exact >= "
            f"{near['lsh']['threshold']}): {near['precision']['kept']['precision']}; planted pairs merged "
            f"with exact >= threshold: {bands['precision_of_merged']}; by band {json.dumps(bands)}"
        )
    print(f"single-process floor (fingerprint + decontam, no Ray): {floor:.1f} docs/s")
    print(f"dedup_peak_rss_8x_vs_1x: {eight['peak_rss_mb'] / one['peak_rss_mb']:.2f}x")
    print(f"dedup_largest_process_rss_8x_vs_1x: {eight['peak_process_rss_mb'] / one['peak_process_rss_mb']:.2f}x")
    print(f"dedup_throughput_8x_vs_floor: {eight['docs_per_s'] / floor:.2f}x")


if __name__ == "__main__":
    main()
