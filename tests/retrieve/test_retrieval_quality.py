"""A small slice of the held-out evaluation (bench/retrieval_quality.py has the full one)."""

from __future__ import annotations

import pandas as pd

from raypipe.config import RetrieveConfig, StorageConfig
from raypipe.retrieve import SeedRetriever, build_seed_index
from raypipe.retrieve.evaluate import bucket, held_out_split, roc_auc, web_negatives
from raypipe.seeds import LoadReport, load_seed_file


def _sample(df: pd.DataFrame, n: int, salt: str) -> pd.DataFrame:
    return df.assign(_b=df["id"].map(lambda i: bucket(str(i), salt))).nsmallest(n, "_b").drop(columns="_b")


def test_held_out_api_docs_outscore_web_pages(shared_data, tmp_path):
    files = [
        "gorilla_api_docs/torchhub_api.jsonl.gz",
        "gorilla_api_docs/tensorflowhub_api.jsonl.gz",
        "api_docs_pypi/python_library_docs.jsonl.gz",
        "gorilla_apizoo/Youtube_API.json.gz",
        "function_calling/glaive_toolcall_en_demo.json.gz",
    ]
    rows = [
        s for f in files for s in load_seed_file(str(shared_data / "seeds" / f), StorageConfig(), LoadReport(), "raise")
    ]
    seeds = pd.DataFrame(rows).drop_duplicates("text_hash").reset_index(drop=True)
    indexed, held = held_out_split(seeds)
    assert not set(indexed["id"]) & set(held["id"])
    assert not {a[0] for a in held["apis"]} & {a for apis in indexed["apis"] for a in apis}
    positives = pd.concat([_sample(held[held.source == s], 6, "pos") for s in ("api_docs_pypi", "gorilla_api_docs")])
    negatives = web_negatives(shared_data, limit_per_source=4)
    assert negatives.groupby("source").size().to_dict() == {
        "c4": 4,
        "html/scrapinghub_aeb": 4,
        "html/trafilatura": 4,
        "wiki": 4,
    }
    cfg = RetrieveConfig(seed_max_chunks=1, max_chunks=2)
    build_seed_index(_sample(indexed, 80, "idx").reset_index(drop=True), cfg, str(tmp_path), StorageConfig())
    scored = SeedRetriever(cfg, str(tmp_path), StorageConfig())
    pos = scored(positives[["text"]].reset_index(drop=True))["seed_similarity"]
    neg = scored(negatives[["text"]].reset_index(drop=True))["seed_similarity"]
    assert pos.notna().all() and neg.notna().all()
    assert roc_auc(pos.to_numpy(), neg.to_numpy()) >= 0.85
