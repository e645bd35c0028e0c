"""The retrieval stage: score every extracted page by how close it sits to the API-doc seeds.

``SeedRetriever`` is a plain callable over pandas batches (testable without Ray) that loads the
model and the index once; Ray Data runs it on an actor pool. Pages without text, or already failed
by the quality filter, get null scores: embedding them would cost model time for nothing.

How a page is scored (each step chosen on real documentation pages, issue 13): the page is split
into ``max_tokens`` chunks, up to ``max_chunks``; each chunk scores the mean cosine of its ``knn``
nearest seed vectors; the page's ``seed_similarity`` is the mean of its chunks
(``chunk_aggregate``); ``nearest_seed`` is the nearest seed of the best chunk. The nearest seed
alone and the best chunk alone are both maxima over many noisy cosines: a long news page gets
many tries at one lucky neighbour, a documentation page is near a whole region of API docs in
every chunk. On the dev set of bench/devset.py (dev split, docs vs web pages), the old rule (best
of 2 chunks, nearest seed, trajectories indexed) gave AUC 0.955 on Python library docs and 0.872
on other ecosystems; the mean of 4 chunks, knn 100, API-doc seeds only, gave 0.983 and 0.969
(test split: 0.954/0.835 before, 0.978/0.952 after; ``python -m bench.retrieval_quality --real``).

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


def page_scores(
    scores: np.ndarray, rows: np.ndarray, owner: np.ndarray, n_pages: int, how: str = "max"
) -> tuple[np.ndarray, np.ndarray]:
    """One score and one nearest seed row per page from its chunks' scores (``owner`` = page of each chunk).

    ``max`` takes the best chunk; ``mean`` averages the page's chunks. The seed row is always
    the best chunk's nearest seed. Chunks without a neighbour (NaN score) are ignored; a page
    with none gets NaN and row -1.
    """
    out_score, out_row = np.full(n_pages, np.nan), np.full(n_pages, -1, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    valid = np.isfinite(scores)
    if not valid.any():
        return out_score, out_row
    scores, rows, owner = scores[valid], np.asarray(rows)[valid], np.asarray(owner)[valid]
    best = np.lexsort((-scores, owner))  # chunks grouped by page, best first within a page
    first = best[np.r_[True, owner[best][1:] != owner[best][:-1]]]
    out_row[owner[first]] = rows[first]
    if how == "max":
        out_score[owner[first]] = scores[first]
    elif how == "mean":
        sums, counts = np.bincount(owner, scores, n_pages), np.bincount(owner, minlength=n_pages)
        has = counts > 0
        out_score[has] = sums[has] / counts[has]
    else:
        raise ValueError(f"unknown chunk aggregation {how!r}")
    return out_score, out_row


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
        scores, rows = self.index.search(self.embedder.embed_ids(chunks), self.cfg.knn)
        page_score, page_row = page_scores(scores, rows, owner, int(ok.sum()), self.cfg.chunk_aggregate)
        hit = page_row >= 0
        similarity = np.full(len(batch), np.nan)
        seed = np.full(len(batch), None, dtype=object)
        similarity[np.flatnonzero(ok)[hit]] = page_score[hit]
        seed[np.flatnonzero(ok)[hit]] = self.index.seed_ids[page_row[hit]]
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

    from raypipe.store.storage import OutputStore

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
