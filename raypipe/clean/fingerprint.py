"""The clean phase's row-local signals, computed in one pass from one normalization of the text."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import ray

from raypipe.clean.decontam import DecontamIndex, DecontamMatcher
from raypipe.config import DecontamConfig, DedupConfig
from raypipe.dedup.minhash import DedupFingerprinter
from raypipe.dedup.normalize import normalize_text, word_hashes, words
from raypipe.dedup.survivor import rank_keys
from raypipe.stage import Resources, Stage

_FINGERPRINT_TYPES = {
    "text_hash": pa.string(),
    "lsh_buckets": pa.list_(pa.uint64()),
    "minhash_sketch": pa.binary(),
    "contaminated": pa.bool_(),
    "contamination_ngrams": pa.int64(),
    "contamination_benchmarks": pa.list_(pa.string()),
    "contamination_items": pa.list_(pa.string()),
    "rank_key": pa.string(),
    "_eligible": pa.bool_(),
}


class CleanFingerprinter(Stage):
    """Stage: every row-local signal of the clean phase, from one normalization of the text.

    Adds the columns of :class:`DedupFingerprinter` and :class:`DecontamMatcher`, ``rank_key``
    (the survivor order, :mod:`raypipe.dedup.survivor`) and ``_eligible`` (no earlier
    ``drop_reason`` and not contaminated: takes part in dedup). ``index`` (or a Ray object
    reference to it: fetched once per actor in ``setup``) is None when decontamination is
    disabled. An actor pool: the index is large and loaded once per actor.
    """

    needs = ("doc_id", "text")
    adds = pa.schema([("drop_reason", pa.string()), *_FINGERPRINT_TYPES.items()])

    def __init__(
        self,
        dedup: DedupConfig,
        decontam: DecontamConfig,
        index: DecontamIndex | ray.ObjectRef | None,
        resources: Resources | None = None,
    ):
        self.dedup_cfg, self.decontam_cfg, self.index = dedup, decontam, index
        self.resources = resources or Resources(cpus=1.0, actors=1)
        self.batch_size = dedup.batch_size

    def setup(self) -> None:
        if isinstance(self.index, ray.ObjectRef):
            self.index = ray.get(self.index)
        self.dedup = DedupFingerprinter(self.dedup_cfg)
        self.matcher = DecontamMatcher(self.index, self.decontam_cfg.min_matches) if self.index is not None else None

    def __call__(self, batch: pa.Table) -> pa.Table:
        n = batch.num_rows
        normalized = [normalize_text(t) for t in batch.column("text").to_pylist()]
        hashes = word_hashes([words(t) for t in normalized])
        added: dict[str, list[Any]] = self.dedup.columns(normalized, hashes)
        if self.matcher is not None:
            added.update(self.matcher.columns(hashes))
        else:
            added.update(
                contaminated=[False] * n,
                contamination_ngrams=[0] * n,
                contamination_benchmarks=[[] for _ in range(n)],
                contamination_items=[[] for _ in range(n)],
            )
        selected = batch.column("selected").to_pandas() if "selected" in batch.column_names else None
        added["rank_key"] = rank_keys(batch.column("doc_id").to_pandas(), selected).tolist()
        reasons = batch.column("drop_reason").cast(pa.string()) if "drop_reason" in batch.column_names else None
        active = np.ones(n, dtype=bool) if reasons is None else np.asarray(reasons.is_null().to_pylist(), dtype=bool)
        added["_eligible"] = (active & ~np.asarray(added["contaminated"], dtype=bool)).tolist()
        table = batch.drop_columns([c for c in [*_FINGERPRINT_TYPES, "drop_reason"] if c in batch.column_names])
        table = table.append_column("drop_reason", reasons if reasons is not None else pa.nulls(n, pa.string()))
        for name, typ in _FINGERPRINT_TYPES.items():
            table = table.append_column(name, pa.array(added[name], type=typ))
        return table
