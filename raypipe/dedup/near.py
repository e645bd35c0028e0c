"""Near-duplicate removal as one function over any Ray Dataset with an id and a text column.

The clean phase runs the same pieces with decontamination, exact dedup and its own bookkeeping
around them; this is the piece on its own, for a pipeline of yours (``docs/stages.md``):
MinHash fingerprints (a stage), LSH candidate pairs verified by estimated Jaccard, then connected
components; every document but its component's smallest id is labelled.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import ray.data

from raypipe.config import DedupConfig
from raypipe.dedup.components import connected_components
from raypipe.dedup.lsh import candidate_edges
from raypipe.dedup.minhash import DedupFingerprinter
from raypipe.dedup.shuffle import cluster_cpus
from raypipe.stage import FrameStage, apply, map_table

FINGERPRINT_SCHEMA = pa.schema(
    [("text_hash", pa.string()), ("lsh_buckets", pa.list_(pa.uint64())), ("minhash_sketch", pa.binary())]
)


def _verified(batch: pd.DataFrame) -> pd.DataFrame:
    return batch.loc[batch["verified"].astype(bool), ["src", "dst"]]


def _as_labels(batch: pd.DataFrame, id_column: str) -> pd.DataFrame:
    return pd.DataFrame({id_column: batch["doc_id"], "duplicate_of": batch["component"]})


def near_duplicates(
    ds: ray.data.Dataset,
    cfg: DedupConfig | None = None,
    id_column: str = "doc_id",
    text_column: str = "text",
    num_partitions: int | None = None,
) -> ray.data.Dataset:
    """``(id, duplicate_of)`` for every near-duplicate in ``ds`` (a materialized dataset); the
    survivor of each cluster is its smallest id and is not listed. Ids must be unique strings."""
    cfg = cfg or DedupConfig()
    partitions = num_partitions or max(1, int(cluster_cpus()))
    fingerprint = FrameStage(
        DedupFingerprinter, needs=(text_column,), adds=FINGERPRINT_SCHEMA, cfg=cfg, text_column=text_column
    )
    rows = apply(ds.select_columns([id_column, text_column]), fingerprint)
    rows = rows.rename_columns({id_column: "doc_id"}) if id_column != "doc_id" else rows
    rows = rows.select_columns(["doc_id", "text_hash", "lsh_buckets", "minhash_sketch"])
    edges = candidate_edges(rows, cfg.threshold, cfg.verify_candidates, partitions, collapse_exact=False)
    verified = map_table(edges, _verified, batch_format="pandas").materialize()
    if not verified.count():
        return ray.data.from_pandas(
            pd.DataFrame({id_column: pd.Series(dtype=str), "duplicate_of": pd.Series(dtype=str)})
        )
    components, _ = connected_components(verified, partitions, cfg.max_cc_rounds)
    return map_table(components, _as_labels, batch_format="pandas", id_column=id_column).materialize()
