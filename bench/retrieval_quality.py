"""Held-out ROC AUC of seed_similarity: API docs kept out of the index vs general web pages.

Rule (stated before looking at test numbers): every variant is scored on the dev half; the variant
with the best dev AUC (ties: the cheaper one) is the one whose test AUC is reported, next to the
naive baseline (first 256 tokens of a page, first chunk of each seed). The test half is never used
to choose anything. Splits and samples are by hash, so reruns give the same sets.

    PYTHONPATH=$PWD python bench/retrieval_quality.py [--data ../shared/data] [--seeds-per-source 400]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from raypipe.config import RetrieveConfig, SeedsConfig, StorageConfig
from raypipe.retrieve.evaluate import bucket, dev_test, held_out_split, roc_auc, web_negatives
from raypipe.retrieve.index import build_seed_index
from raypipe.retrieve.stage import SeedRetriever
from raypipe.seeds import load_seeds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    ap.add_argument("--seeds-per-source", type=int, default=400, help="index sample per seed source (0 = all)")
    ap.add_argument("--negatives-per-source", type=int, default=120)
    ap.add_argument("--positives-per-source", type=int, default=120)
    ap.add_argument("--max-chunks", type=int, default=8, help="most chunks per page embedded for the variants")
    args = ap.parse_args()
    data = Path(args.data)
    started = time.monotonic()

    seeds = load_seeds(SeedsConfig(sources=[str(data / "seeds")], harvest_modules=[]), StorageConfig())
    index_seeds, positives = held_out_split(seeds)
    if args.seeds_per_source:
        index_seeds = (
            index_seeds.assign(_b=index_seeds["id"].map(lambda i: bucket(i, "sample")))
            .sort_values(["source", "_b"])
            .groupby("source")
            .head(args.seeds_per_source)
            .drop(columns="_b")
        )
    positives = positives.assign(_b=positives["id"].map(lambda i: bucket(i, "pos"))).sort_values(["source", "_b"])
    positives = positives.groupby("source").head(args.positives_per_source)
    negatives = web_negatives(data, args.negatives_per_source)
    pages = pd.concat(
        [
            positives[["id", "source", "text"]].assign(label=1),
            negatives[["id", "source", "text"]].assign(label=0),
        ],
        ignore_index=True,
    )
    pages["split"] = dev_test(pages)
    print(
        f"index seeds {len(index_seeds)}, positives {int(pages.label.sum())}, negatives {int((1 - pages.label).sum())}"
    )
    print("positives by source", positives["source"].value_counts().to_dict())
    print("negatives by source", negatives["source"].value_counts().to_dict())

    with tempfile.TemporaryDirectory() as out:
        cfg = RetrieveConfig(seed_max_chunks=4, max_chunks=4)
        meta = build_seed_index(index_seeds.reset_index(drop=True), cfg, out, StorageConfig())
        print(f"index: {meta['n_vectors']} vectors, built in {meta['build_seconds']}s")
        retriever = SeedRetriever(cfg, out, StorageConfig())
        seed_vectors = retriever.index.index.reconstruct_n(0, retriever.index.index.ntotal)
        vector_seed = retriever.index.vector_seeds
        first_of_seed = np.r_[True, vector_seed[1:] != vector_seed[:-1]]
        is_doc = (index_seeds.reset_index(drop=True)["kind"] == "api_doc").to_numpy()[vector_seed]

        vecs, owner = retriever.embedder.embed_texts(pages["text"].tolist(), args.max_chunks)
        position = np.arange(len(owner)) - np.searchsorted(owner, owner)
        variants = {}
        for seed_name, seed_mask in (
            ("seed first chunk", first_of_seed),
            ("seed chunks<=4", np.ones_like(first_of_seed)),
            ("api_doc seeds only", is_doc),
        ):
            best_chunk = (vecs @ seed_vectors[seed_mask].T).max(axis=1)
            for k in (1, 2, 4, args.max_chunks):
                per_page = pd.Series(best_chunk[position < k]).groupby(owner[position < k]).max()
                variants[(seed_name, f"page chunks<={k}")] = pages.index.map(per_page).to_numpy(float)

        def auc(scores: np.ndarray, split: str, english_only: bool = False) -> float:
            sel = (pages["split"] == split).to_numpy()
            if english_only:
                sel &= ~pages["source"].str.startswith("html").to_numpy() | pages["english"].to_numpy()
            return roc_auc(scores[sel & (pages.label == 1).to_numpy()], scores[sel & (pages.label == 0).to_numpy()])

        from resiliparse.parse.lang import detect_fast

        pages["english"] = pages["text"].map(lambda t: detect_fast(t[:2000])[0] == "en")
        dev = {name: auc(s, "dev") for name, s in variants.items()}
        for name, value in sorted(dev.items(), key=lambda kv: -kv[1]):
            print(f"dev AUC {value:.4f}  {name[0]:>20} | {name[1]}")
        chosen = max(dev, key=lambda n: (round(dev[n], 4), -int(n[1].split("<=")[1])))
        naive = ("seed first chunk", "page chunks<=1")
        print(f"chosen on dev: {chosen}")

        test_pages = pages[pages["split"] == "test"].reset_index(drop=True)
        stage_cfg = RetrieveConfig(seed_max_chunks=4, max_chunks=int(chosen[1].split("<=")[1]))
        if chosen[0] == "seed chunks<=4":
            scored = SeedRetriever(stage_cfg, out, StorageConfig())(test_pages[["text"]])
            stage_scores = scored["seed_similarity"].to_numpy(float)
            lbl = test_pages["label"].to_numpy()
            print(f"test AUC via SeedRetriever.__call__: {roc_auc(stage_scores[lbl == 1], stage_scores[lbl == 0]):.4f}")
        result = {
            "test_auc_chosen": auc(variants[chosen], "test"),
            "test_auc_naive": auc(variants[naive], "test"),
            "test_auc_chosen_english_negatives": auc(variants[chosen], "test", english_only=True),
            "test_auc_naive_english_negatives": auc(variants[naive], "test", english_only=True),
            "chosen": " | ".join(chosen),
            "seconds": round(time.monotonic() - started),
        }
    print(json.dumps(result, indent=1))
    print(f"retrieval AUC (test, chosen): {result['test_auc_chosen']:.4f}")
    print(f"retrieval AUC (test, naive first-chunk): {result['test_auc_naive']:.4f}")


if __name__ == "__main__":
    main()
