"""Held-out ROC AUC of seed_similarity: API docs kept out of the index vs general web pages.

Positives: reference pages of whole libraries held out of the index (the web's doc pages mostly
document libraries the seeds lack) and held-out Gorilla API docs; each group is reported apart.
Negatives: real web pages (resiliparse main-content text), C4 and Wikipedia.

Rule, fixed before any test number was seen: every variant (page chunking, seed chunking, index
composition) is scored on the dev half; the variant with the best dev AUC on the library-page
positives (ties: the cheaper one) is reported on the test half, next to the naive baseline
(first 256 tokens of a page against the first chunk of each shared seed). Test data never chooses.
Splits and samples are by hash, so reruns give the same sets. Scores are computed exactly as the
stage does (same Embedder chunks, exact inner product, max over chunks); ``--stage-check`` also
runs SeedRetriever on the test pages with the chosen settings.

    PYTHONPATH=$PWD python bench/retrieval_quality.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from raypipe.config import RetrieveConfig, SeedsConfig, StorageConfig
from raypipe.retrieve.embed import Embedder
from raypipe.retrieve.evaluate import bucket, dev_test, held_out_split, package_of, roc_auc, web_negatives
from raypipe.seeds import harvest_api_docs, load_seeds

# import names of the libraries whose docs are in seeds/api_docs_pypi: held-out ones must not be harvested
IMPORT_NAMES = {
    "aiohttp": ["aiohttp"],
    "Werkzeug": ["werkzeug"],
    "click": ["click"],
    "attrs": ["attr", "attrs"],
    "urllib3": ["urllib3"],
    "Jinja2": ["jinja2"],
    "MarkupSafe": ["markupsafe"],
    "more-itertools": ["more_itertools"],
    "pluggy": ["pluggy"],
}


def sample(df: pd.DataFrame, per_group: int, by: str, salt: str) -> pd.DataFrame:
    ranked = df.assign(_b=df["id"].map(lambda i: bucket(str(i), salt))).sort_values([by, "_b"])
    return ranked.groupby(by, sort=True).head(per_group).drop(columns="_b").reset_index(drop=True)


def embed_cached(embedder: Embedder, texts: list[str], max_chunks: int, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """Chunk vectors of ``texts`` (and their owners), reusing vectors saved by an earlier run."""
    import hashlib

    keys = [hashlib.sha1(f"{max_chunks}:{t}".encode()).hexdigest() for t in texts]
    stored: dict[str, np.ndarray] = dict(np.load(cache)) if cache.exists() else {}
    missing = [i for i, k in enumerate(keys) if k not in stored]
    if missing:
        vecs, owner = embedder.embed_texts([texts[i] for i in missing], max_chunks)
        for j, i in enumerate(missing):
            stored[keys[i]] = vecs[owner == j]
        np.savez(cache, **stored)
    parts = [stored[k] for k in keys]
    return np.concatenate(parts), np.repeat(np.arange(len(texts)), [len(p) for p in parts])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    ap.add_argument("--seeds-per-source", type=int, default=300, help="index sample per seed source (0 = all)")
    ap.add_argument("--harvest-sample", type=int, default=800, help="harvested Python API docs in the +harvest index")
    ap.add_argument("--negatives-per-source", type=int, default=120)
    ap.add_argument("--gorilla-positives", type=int, default=80)
    ap.add_argument("--cache", default="/tmp/raypipe_retrieval_quality_cache.npz")
    ap.add_argument("--stage-check", action="store_true", help="also score the test pages with SeedRetriever")
    args = ap.parse_args()
    data, cache = Path(args.data), Path(args.cache)
    started = time.monotonic()

    seeds = load_seeds(SeedsConfig(sources=[str(data / "seeds")], harvest_modules=[]), StorageConfig())
    indexed, held = held_out_split(seeds)
    if args.seeds_per_source:
        indexed = sample(indexed, args.seeds_per_source, "source", "sample")
    held_packages = sorted({package_of(t) for t in held.loc[held.schema == "library_doc", "text"]})
    harvest_cfg = SeedsConfig(harvest_modules=["@stdlib", "@installed"])
    harvest_cfg.harvest_exclude = [*harvest_cfg.harvest_exclude, *(m for p in held_packages for m in IMPORT_NAMES[p])]
    harvested = pd.DataFrame(harvest_api_docs(harvest_cfg)[0])
    harvested = sample(harvested.assign(group=1), args.harvest_sample, "group", "harvest")

    library = held[held.schema == "library_doc"]
    gorilla = sample(held[held.schema == "gorilla_api"], args.gorilla_positives, "source", "pos")
    negatives = web_negatives(data, args.negatives_per_source)
    pages = pd.concat(
        [
            library[["id", "text"]].assign(group="library", label=1),
            gorilla[["id", "text"]].assign(group="gorilla", label=1),
            negatives[["id", "text"]].assign(group=negatives["source"], label=0),
        ],
        ignore_index=True,
    )
    pages["split"] = dev_test(pages)
    print(f"held-out libraries: {held_packages}")
    print(f"index: {len(indexed)} shared seeds + {len(harvested)} harvested API docs")
    print("pages:", pages.groupby(["group", "split"]).size().unstack().to_dict("index"))

    embedder = Embedder(RetrieveConfig().model)
    seed_vecs, seed_owner = embed_cached(embedder, indexed["text"].tolist(), 4, cache)
    harvest_vecs, harvest_owner = embed_cached(embedder, harvested["text"].tolist(), 4, cache)
    page_vecs, page_owner = embed_cached(embedder, pages["text"].tolist(), 8, cache)
    page_pos = np.arange(len(page_owner)) - np.searchsorted(page_owner, page_owner)

    def first(owner: np.ndarray) -> np.ndarray:
        return np.r_[True, owner[1:] != owner[:-1]]

    is_doc = (indexed["kind"] == "api_doc").to_numpy()[seed_owner]
    indexes = {
        "shared seeds, first chunk": seed_vecs[first(seed_owner)],
        "shared seeds, <=4 chunks": seed_vecs,
        "shared api_doc seeds, <=4 chunks": seed_vecs[is_doc],
        "shared + harvested, <=4 chunks": np.concatenate([seed_vecs, harvest_vecs]),
        "shared + harvested, first chunk": np.concatenate(
            [seed_vecs[first(seed_owner)], harvest_vecs[first(harvest_owner)]]
        ),
    }
    scores: dict[tuple[str, int], np.ndarray] = {}
    for name, vectors in indexes.items():
        best_chunk = (page_vecs @ vectors.T).max(axis=1)
        for k in (1, 2, 4, 8):
            keep = page_pos < k
            per_page = pd.Series(best_chunk[keep]).groupby(page_owner[keep]).max()
            scores[(name, k)] = pages.index.map(per_page).to_numpy(float)

    def auc(s: np.ndarray, split: str, group: str) -> float:
        sel = (pages["split"] == split).to_numpy()
        pos = sel & (pages["group"] == group).to_numpy()
        neg = sel & (pages["label"] == 0).to_numpy()
        return roc_auc(s[pos], s[neg])

    dev = {v: auc(s, "dev", "library") for v, s in scores.items()}
    for (name, k), value in sorted(dev.items(), key=lambda kv: -kv[1]):
        gorilla_dev = auc(scores[(name, k)], "dev", "gorilla")
        print(f"dev AUC library {value:.4f} | gorilla {gorilla_dev:.4f} | {name}, page chunks<={k}")
    chosen = max(dev, key=lambda v: (round(dev[v], 4), -v[1]))
    naive = ("shared seeds, first chunk", 1)
    result = {
        "chosen": f"{chosen[0]}, page chunks<={chosen[1]}",
        "test_auc_library_chosen": auc(scores[chosen], "test", "library"),
        "test_auc_library_naive": auc(scores[naive], "test", "library"),
        "test_auc_gorilla_chosen": auc(scores[chosen], "test", "gorilla"),
        "test_auc_gorilla_naive": auc(scores[naive], "test", "gorilla"),
        "seconds": round(time.monotonic() - started),
    }
    if args.stage_check:
        import tempfile

        from raypipe.retrieve import SeedRetriever, build_seed_index

        index_seeds = pd.concat([indexed, harvested.drop(columns="group")]) if "harvested" in chosen[0] else indexed
        cfg = RetrieveConfig(seed_max_chunks=1 if "first" in chosen[0] else 4, max_chunks=chosen[1])
        test = pages[pages["split"] == "test"].reset_index(drop=True)
        with tempfile.TemporaryDirectory() as out:
            build_seed_index(index_seeds.reset_index(drop=True), cfg, out, StorageConfig())
            s = SeedRetriever(cfg, out, StorageConfig())(test[["text"]])["seed_similarity"].to_numpy(float)
        lib, neg = (test["group"] == "library").to_numpy(), (test["label"] == 0).to_numpy()
        result["test_auc_library_chosen_via_stage"] = roc_auc(s[lib], s[neg])
    print(json.dumps(result, indent=1))
    print(f"retrieval AUC library pages (test, chosen): {result['test_auc_library_chosen']:.4f}")
    print(f"retrieval AUC library pages (test, naive): {result['test_auc_library_naive']:.4f}")


if __name__ == "__main__":
    main()
