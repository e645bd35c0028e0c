"""The retrieval stage: score every extracted page by its best cosine to any seed.

``SeedRetriever`` is a plain callable over pandas batches (testable without Ray) that loads the
model and the index once; Ray Data runs it on an actor pool. Pages without text, or already failed
by the quality filter, get null scores: embedding them would cost model time for nothing.

Long pages are split into ``max_tokens`` chunks, up to ``max_chunks`` per page, and the page gets
the best chunk's score: documentation often starts with an overview and the API reference comes
later. Measured in bench/retrieval_quality.py on held-out library reference pages (dev half): the
first 256 tokens only gave AUC 0.928, two chunks 0.952, four 0.956 against the shared seeds; with
harvested Python API docs in the index and one vector per seed, two chunks gave 0.991 (the
default), four 0.986, one 0.966.

On GPU clusters tokenizing runs in separate CPU tasks (``tokenize_pages``) that hand id lists to
the GPU actors, so the GPU never waits on the tokenizer; on CPU-only clusters one actor does both.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from raypipe.config import RetrieveConfig, StorageConfig
from raypipe.retrieve.embed import Embedder, chunk_token_ids, load_tokenizer
from raypipe.retrieve.index import load_seed_index
from raypipe.stage import FrameStage, Resources, apply

CHUNKS_COLUMN = "_retrieve_chunks"


def scorable(batch: pd.DataFrame) -> np.ndarray:
    """Rows worth embedding: non-empty text and not failed by the quality filter."""
    text = batch["text"] if "text" in batch else pd.Series([None] * len(batch), index=batch.index)
    ok = text.notna().to_numpy() & (text.fillna("").astype(str).str.strip().str.len() > 0).to_numpy()
    if "quality_ok" in batch:
        ok &= ~batch["quality_ok"].eq(False).fillna(False).to_numpy(dtype=bool)
    return ok


def tokenize_pages(batch: pd.DataFrame, model: str, max_tokens: int, max_chunks: int) -> pd.DataFrame:
    """CPU step: each scorable page's chunks as lists of token ids (empty list for the others)."""
    ok = scorable(batch)
    tokenizer = load_tokenizer(model)
    chunks, owner = chunk_token_ids(tokenizer, batch.loc[ok, "text"].astype(str).tolist(), max_tokens, max_chunks)
    per_page: list[list[list[int]]] = [[] for _ in range(int(ok.sum()))]
    for chunk, page in zip(chunks, owner, strict=False):
        per_page[page].append(chunk)
    column: list[list[list[int]]] = [[] for _ in range(len(batch))]
    for pos, page_chunks in zip(np.flatnonzero(ok), per_page, strict=False):
        column[pos] = page_chunks
    out = batch.copy()
    out[CHUNKS_COLUMN] = column
    return out


class SeedRetriever:
    """Adds ``seed_similarity`` (max cosine to any seed, float or null) and ``nearest_seed`` (seed id)."""

    def __init__(self, cfg: RetrieveConfig, output_prefix: str, storage_cfg: StorageConfig):
        self.cfg = cfg
        self.index = load_seed_index(output_prefix, storage_cfg, cfg.index_dir)
        self.embedder = Embedder(self.index.meta["model"], cfg.device, cfg.max_tokens, cfg.batch_size)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        ok = scorable(batch)
        if CHUNKS_COLUMN in batch:
            lists = batch[CHUNKS_COLUMN].to_numpy()[ok]
            chunks = [list(map(int, c)) for page in lists for c in page]
            owner = np.repeat(np.arange(len(lists)), [len(p) for p in lists])
        else:
            chunks, owner = self.embedder.chunk(batch.loc[ok, "text"].astype(str).tolist(), self.cfg.max_chunks)
        scores, rows = self.index.search(self.embedder.embed_ids(chunks))
        scores = np.where(np.isnan(scores), -np.inf, scores.astype(np.float64))
        best = np.lexsort((-scores, owner))  # chunks grouped by page, best first within a page
        first = best[np.r_[True, owner[best][1:] != owner[best][:-1]]] if len(best) else best
        first = first[np.isfinite(scores[first])]
        rows_hit = np.flatnonzero(ok)[owner[first]]
        similarity = np.full(len(batch), np.nan)
        seed = np.full(len(batch), None, dtype=object)
        similarity[rows_hit] = scores[first]
        seed[rows_hit] = self.index.seed_ids[rows[first]]
        out = batch.drop(columns=[CHUNKS_COLUMN], errors="ignore").copy()
        out["seed_similarity"] = similarity
        out["nearest_seed"] = seed
        return out


def retrieval_resources(cfg: RetrieveConfig, resources: dict[str, float] | None = None) -> Resources:
    """SeedRetriever's actor pool.

    ``num_gpus`` set to a number: every actor asks for that many GPUs whether or not the cluster
    shows any yet (on KubeRay the autoscaler brings GPU nodes from zero for the pending actors),
    and the pool grows to ``actors`` (default: one per visible GPU, at least one). ``auto``: GPUs
    when the cluster has them now, else CPU. CPU only: a few actors with a *fraction* of a CPU
    each, so read and extract tasks still get scheduled (two whole-CPU actors on a 2-CPU node
    starve the readers and the plan hangs).
    """
    if resources is None:
        import ray

        resources = ray.cluster_resources()
    cpus, gpus = float(resources.get("CPU", 1)), float(resources.get("GPU", 0))
    per_actor_gpus = (1.0 if gpus > 0 else 0.0) if cfg.num_gpus == "auto" else float(cfg.num_gpus)
    if per_actor_gpus > 0:
        actors = cfg.actors or max(1, int(gpus / per_actor_gpus))
        return Resources(cpus=cfg.cpus_per_actor or 1.0, gpus=per_actor_gpus, actors=actors, min_actors=actors)
    actors = cfg.actors or max(1, int(cpus // 8))
    cpu_share = cfg.cpus_per_actor or max(0.25, min(4.0, cpus / (4 * actors)))
    return Resources(cpus=cpu_share, actors=actors, min_actors=actors)


RETRIEVAL_SCHEMA = pa.schema([("seed_similarity", pa.float64()), ("nearest_seed", pa.string())])


def add_retrieval(ds: Any, cfg: RetrieveConfig, output_prefix: str, storage_cfg: StorageConfig) -> Any:
    """Append the retrieval stage(s) to a Ray Dataset of extracted pages.

    With GPUs, a CPU tokenizing step precedes the GPU actors; without, the actors tokenize.
    """
    import json

    from raypipe.storage import OutputStore

    resources = retrieval_resources(cfg)
    batch_size = cfg.batch_size * 4
    if resources.gpus:
        meta = json.loads(OutputStore(output_prefix, storage_cfg).read_bytes(f"{cfg.index_dir.strip('/')}/meta.json"))
        tokenize = FrameStage(
            tokenize_pages,
            needs=("text",),
            adds=pa.schema([(CHUNKS_COLUMN, pa.list_(pa.list_(pa.int64())))]),
            resources=Resources(cpus=1.0),
            batch_size=batch_size,
            model=meta["model"],
            max_tokens=min(cfg.max_tokens, meta["max_tokens"]),
            max_chunks=cfg.max_chunks,
        )
        ds = apply(ds, tokenize)
    retriever = FrameStage(
        SeedRetriever,
        needs=("text",),
        adds=RETRIEVAL_SCHEMA,
        resources=resources,
        batch_size=batch_size,
        cfg=cfg,
        output_prefix=output_prefix,
        storage_cfg=storage_cfg,
    )
    return apply(ds, retriever)
