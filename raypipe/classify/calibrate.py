"""seed_similarity for the calibration sets, computed the way the retrieval stage computes it.

Why not just run the retrieval stage on held-out seeds: they are in the seed index, so each one
finds itself (cosine 1.0) and a threshold picked from that would sit far above what any page
reaches. Here the nearest seeds of the text's *own group* (the same library, provider or module,
see ``train.seed_group``) are skipped, which measures how close a page about an API family the
seeds do not cover gets. For sampled pages nothing is skipped, so their score equals the stage's.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence

import numpy as np
import pandas as pd

from raypipe.classify.train import seed_group
from raypipe.config import RetrieveConfig, StorageConfig
from raypipe.retrieve.index import knn_mean
from raypipe.retrieve.stage import page_scores
from raypipe.store.storage import OutputStore

NEIGHBOURS = 256


class CalibrationSimilarity:
    """Each text's seed_similarity as the stage computes it (knn mean, chunk aggregate), ignoring seeds of a group."""

    def __init__(self, retrieve_cfg: RetrieveConfig, output_prefix: str, storage_cfg: StorageConfig):
        from raypipe.retrieve.embed import Embedder
        from raypipe.retrieve.index import SEEDS_FILE, load_seed_index

        self.index = load_seed_index(output_prefix, storage_cfg, retrieve_cfg.index_dir)
        table = OutputStore(output_prefix, storage_cfg).read_bytes(f"{retrieve_cfg.index_dir.strip('/')}/{SEEDS_FILE}")
        seeds = pd.read_parquet(io.BytesIO(table), columns=["text", "source"])
        self.seed_groups = np.array([seed_group(t, s) for t, s in zip(seeds["text"], seeds["source"], strict=True)])
        self.embedder = Embedder(
            self.index.meta["model"], retrieve_cfg.device, retrieve_cfg.max_tokens, retrieve_cfg.batch_size
        )
        self.max_chunks = retrieve_cfg.max_chunks
        self.knn = retrieve_cfg.knn
        self.chunk_aggregate = retrieve_cfg.chunk_aggregate
        self.known: dict[bytes, float] = {}

    def __call__(self, texts: Sequence[str], exclude_groups: Sequence[str | None]) -> np.ndarray:
        """One score per text (NaN for a text without tokens).

        Answers are remembered by (text, group): every training round embeds the same sampled
        pages again (for their labels, then for scoring the round), which would otherwise cost a
        full pass of the embedder over the sample per round.
        """
        keys = [
            hashlib.blake2b(f"{g}\x00{t or ''}".encode(), digest_size=16).digest()
            for t, g in zip(texts, exclude_groups, strict=True)
        ]
        todo = [i for i, k in enumerate(keys) if k not in self.known]
        if todo:
            scores = self._score([texts[i] for i in todo], [exclude_groups[i] for i in todo])
            self.known.update({keys[i]: float(v) for i, v in zip(todo, scores, strict=True)})
        return np.array([self.known[k] for k in keys], dtype=np.float64)

    def _score(self, texts: Sequence[str], exclude_groups: Sequence[str | None]) -> np.ndarray:
        out = np.full(len(texts), np.nan)
        chunks, owner = self.embedder.chunk([t or "" for t in texts], self.max_chunks)
        if not chunks:
            return out
        vectors = np.ascontiguousarray(self.embedder.embed_ids(chunks), dtype=np.float32)
        k = min(NEIGHBOURS + self.knn, int(self.index.index.ntotal))
        scores, ids = self.index.index.search(vectors, k)
        rows = self.index.vector_seeds[np.maximum(ids, 0)]
        excluded = np.array([exclude_groups[o] for o in owner], dtype=object)[:, None]
        valid = (ids >= 0) & (self.seed_groups[rows] != excluded)
        keep = valid & (np.cumsum(valid, axis=1) <= self.knn)  # the knn nearest seeds outside the text's group
        per_chunk = knn_mean(scores, np.where(keep, ids, -1))
        per_text, _ = page_scores(per_chunk, np.zeros(len(owner), np.int64), owner, len(texts), self.chunk_aggregate)
        return per_text
