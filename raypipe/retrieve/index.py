"""The FAISS seed index: build from the seed table, persist under the output prefix, load anywhere.

Layout under ``<output>/<index_dir>/``: ``index.faiss`` (serialized FAISS index of L2-normalized
chunk vectors, inner product = cosine), ``vector_seeds.npy`` (seed row of every vector: seeds may
have several chunks), ``seeds.parquet`` (the seed table) and ``meta.json`` (model, dimension,
chunking, index type, counts, the seed load report). Workers read these bytes through the
OutputStore, so they never depend on the driver's working directory.
"""

from __future__ import annotations

import io
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from raypipe.config import RetrieveConfig, StorageConfig
from raypipe.retrieve.embed import Embedder
from raypipe.store.storage import OutputStore

log = logging.getLogger(__name__)
INDEX_FILE, VECTORS_FILE, SEEDS_FILE, META_FILE = "index.faiss", "vector_seeds.npy", "seeds.parquet", "meta.json"


def choose_index_type(n_vectors: int, cfg: RetrieveConfig) -> str:
    """Exact search while it is affordable; IVF beyond (trains fast, runs on GPU), or as configured."""
    if cfg.index_type != "auto":
        return cfg.index_type
    return "flat" if n_vectors <= cfg.flat_max_vectors else "ivf"


def build_faiss_index(vectors: np.ndarray, cfg: RetrieveConfig) -> tuple[Any, str]:
    """A CPU FAISS inner-product index over ``vectors`` (already L2-normalized)."""
    import faiss

    n, dim = vectors.shape
    kind = choose_index_type(n, cfg)
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = cfg.hnsw_ef_search
    else:
        nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))
        index = faiss.index_factory(dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        sample = vectors[rng.choice(n, size=min(n, 256 * nlist), replace=False)]
        index.train(sample)
        index.nprobe = min(cfg.ivf_nprobe, nlist)
    index.add(vectors)
    return index, kind


def to_gpu_if_available(index: Any) -> Any:
    """Move the index onto this worker's GPU when FAISS was built with GPU support and one is visible."""
    import faiss

    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1 or isinstance(index, faiss.IndexHNSW):
        return index
    resources = faiss.StandardGpuResources()
    gpu_index = faiss.index_cpu_to_gpu(resources, 0, index)
    gpu_index.referenced_resources = resources  # keep the resources alive as long as the index
    return gpu_index


def build_seed_index(
    seeds: pd.DataFrame, cfg: RetrieveConfig, output_prefix: str, storage_cfg: StorageConfig
) -> dict[str, Any]:
    """Embed the seeds of ``index_kinds`` (up to ``seed_max_chunks`` vectors each), index them, persist it all.

    Trajectory seeds are left out of the index by default: web pages that look like agent
    dialogues are rare, and as neighbours trajectories separate documentation from web pages
    worse than API docs do (bench/retrieval_quality.py). The seed table keeps every seed.

    Returns the meta dict that was written. The seed table's ``df.attrs["load_report"]`` is kept.
    """
    import faiss

    if seeds.empty:
        raise ValueError("cannot build a seed index from an empty seed table")
    started = time.monotonic()
    embedder = Embedder(cfg.model, cfg.device, cfg.max_tokens, cfg.batch_size)
    indexed = np.flatnonzero(seeds["kind"].isin(cfg.index_kinds).to_numpy())
    if not len(indexed):
        present = sorted(seeds["kind"].unique())
        raise ValueError(f"no seed of kinds {cfg.index_kinds} to index (kinds present: {present})")
    vectors, owner = embedder.embed_texts(seeds["text"].iloc[indexed].tolist(), cfg.seed_max_chunks)
    owner = indexed[owner]
    index, kind = build_faiss_index(vectors, cfg)
    store = OutputStore(output_prefix, storage_cfg)
    base = cfg.index_dir.strip("/")
    buf = io.BytesIO()
    np.save(buf, owner.astype(np.int32))
    store.write_bytes(f"{base}/{VECTORS_FILE}", buf.getvalue())
    store.write_bytes(f"{base}/{INDEX_FILE}", faiss.serialize_index(index).tobytes())
    table = io.BytesIO()
    seeds.reset_index(drop=True).to_parquet(table, index=False)
    store.write_bytes(f"{base}/{SEEDS_FILE}", table.getvalue())
    meta = {
        "model": cfg.model,
        "dim": embedder.dim,
        "max_tokens": embedder.max_tokens,
        "seed_max_chunks": cfg.seed_max_chunks,
        "index_kinds": list(cfg.index_kinds),
        "n_indexed_seeds": int(len(indexed)),
        "index_type": kind,
        "n_seeds": len(seeds),
        "n_vectors": int(len(vectors)),
        "seeds_by_source": seeds["source"].value_counts().sort_index().to_dict(),
        "seeds_by_kind": seeds["kind"].value_counts().sort_index().to_dict(),
        "faiss_version": faiss.__version__,
        "device": embedder.device,
        "build_seconds": round(time.monotonic() - started, 1),
        "load_report": seeds.attrs.get("load_report", {}),
    }
    store.write_text(f"{base}/{META_FILE}", json.dumps(meta, indent=1, sort_keys=True, default=str))
    log.info("seed index: %d seeds, %d vectors, %s", meta["n_seeds"], meta["n_vectors"], kind)
    return meta


def build_seed_index_on_cluster(
    seeds: pd.DataFrame, cfg: RetrieveConfig, output_prefix: str, storage_cfg: StorageConfig
) -> dict[str, Any]:
    """``build_seed_index`` on a GPU worker when the Ray cluster has one, else in this process.

    A driver usually has no GPU; embedding tens of thousands of seeds there on CPU takes many
    minutes, on one GPU seconds. The worker writes through the OutputStore like any other.
    """
    import ray

    wants_gpu = cfg.device != "cpu" and cfg.num_gpus != 0
    if ray.is_initialized() and wants_gpu and ray.cluster_resources().get("GPU", 0) >= 1:
        task = ray.remote(num_gpus=1)(build_seed_index)
        return ray.get(task.remote(seeds, cfg, output_prefix, storage_cfg))
    return build_seed_index(seeds, cfg, output_prefix, storage_cfg)


def knn_mean(scores: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Row-wise mean of the found neighbours' cosines (``ids >= 0``); NaN for a row with none.

    Why a mean and not the nearest alone: one seed that happens to share a page's vocabulary (a
    news page near one REST endpoint about news) lifts a top-1 score as much as a whole region
    of API documentation does; the mean of several neighbours asks for the region.
    """
    found = ids >= 0
    n = found.sum(axis=1)
    total = np.where(found, scores, 0.0).sum(axis=1, dtype=np.float64)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


@dataclass
class SeedIndex:
    """A loaded seed index: FAISS index, vector→seed row map, seed ids, and the build meta."""

    index: Any
    vector_seeds: np.ndarray
    seed_ids: np.ndarray
    meta: dict[str, Any]

    def search(self, vectors: np.ndarray, knn: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Per query vector: the mean cosine of its ``knn`` nearest seed vectors, and the nearest one's seed row.

        NaN and -1 where no neighbour was found (approximate indexes may return -1 ids); a query
        with fewer than ``knn`` neighbours averages those it has.
        """
        if len(vectors) == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.int64)
        k = max(1, min(knn, int(self.index.ntotal)))
        scores, ids = self.index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)
        return knn_mean(scores, ids), np.where(ids[:, 0] >= 0, self.vector_seeds[np.maximum(ids[:, 0], 0)], -1)


def load_seed_index(
    output_prefix: str, storage_cfg: StorageConfig, index_dir: str = "seed_index", gpu: bool = True
) -> SeedIndex:
    """Read the persisted index from the store (never the local working directory)."""
    import faiss

    store = OutputStore(output_prefix, storage_cfg)
    base = index_dir.strip("/")
    meta = json.loads(store.read_bytes(f"{base}/{META_FILE}"))
    index = faiss.deserialize_index(np.frombuffer(store.read_bytes(f"{base}/{INDEX_FILE}"), dtype=np.uint8))
    vector_seeds = np.load(io.BytesIO(store.read_bytes(f"{base}/{VECTORS_FILE}"))).astype(np.int64)
    seeds = pd.read_parquet(io.BytesIO(store.read_bytes(f"{base}/{SEEDS_FILE}")), columns=["id"])
    if index.ntotal != len(vector_seeds) or int(vector_seeds.max(initial=-1)) >= len(seeds):
        raise ValueError(f"seed index under {store.uri(base)} is inconsistent: rebuild it")
    return SeedIndex(to_gpu_if_available(index) if gpu else index, vector_seeds, seeds["id"].to_numpy(), meta)
