"""Near-duplicate removal as one function over any Ray Dataset with an id and a text column.

The clean phase runs the same pieces with decontamination, exact dedup and its own bookkeeping
around them; this is the piece on its own, for a pipeline of yours (``docs/stages.md``):
MinHash fingerprints (a stage), LSH candidate pairs verified as the clean phase does (by the
estimate where it is far from the threshold, else by exact shingle Jaccard on the workers:
:mod:`raypipe.dedup.verify`), then connected components; every document but its component's
smallest id is labelled.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import ray.data

from raypipe.config import DedupConfig
from raypipe.dedup.components import connected_components
from raypipe.dedup.lsh import candidate_edges
from raypipe.dedup.minhash import DedupFingerprinter
from raypipe.dedup.normalize import partition_of
from raypipe.dedup.shuffle import PARTITION
from raypipe.dedup.verify import verify_edges
from raypipe.stage import LIGHT_TASK_CPUS, FrameStage, apply, cluster_cpus, map_table

_IS_LABEL = "_is_label"
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
    edges = candidate_edges(rows, cfg.threshold, cfg.verify_candidates, partitions, collapse_exact=False).materialize()
    if cfg.verify_candidates and edges.count():
        # the texts are read again from ds rather than kept from the fingerprint pass, so nothing holds them meanwhile
        texts = ds.select_columns([id_column, text_column])
        args = (cfg.threshold, cfg.verify_margin, cfg.shingle_words, partitions, id_column, text_column)
        edges, _ = verify_edges(edges, texts, *args)
    verified = map_table(edges, _verified, batch_format="pandas").materialize()
    if not verified.count():
        return ray.data.from_pandas(
            pd.DataFrame({id_column: pd.Series(dtype=str), "duplicate_of": pd.Series(dtype=str)})
        )
    components, _ = connected_components(verified, partitions, cfg.max_cc_rounds)
    return map_table(components, _as_labels, batch_format="pandas", id_column=id_column).materialize()


def _tagged(batch: pa.Table, schema: pa.Schema, is_label: bool, id_column: str, partitions: int) -> pa.Table:
    """Rows of either side in the one schema both share (absent columns null), with a side marker
    and the hash partition of the id."""
    n, present = batch.num_rows, set(batch.column_names)
    columns = [batch.column(f.name).cast(f.type) if f.name in present else pa.nulls(n, f.type) for f in schema]
    table = pa.Table.from_arrays(columns, schema=schema).append_column(_IS_LABEL, pa.array([is_label] * n))
    partition = partition_of(pd.Series(table.column(id_column).to_pylist(), dtype=object), partitions)
    return table.append_column(PARTITION, pa.array(partition, pa.int64()))


def _unlabelled(group: pa.Table, id_column: str) -> pa.Table:
    is_label = group.column(_IS_LABEL)
    dropped = group.filter(is_label).column(id_column)
    rows = group.filter(pc.invert(is_label)).drop_columns([_IS_LABEL, PARTITION])
    return rows.filter(pc.invert(pc.is_in(rows.column(id_column), value_set=dropped)))


def drop_duplicates(
    ds: ray.data.Dataset, labels: ray.data.Dataset, id_column: str = "doc_id", num_partitions: int | None = None
) -> ray.data.Dataset:
    """``ds`` without the rows whose id ``labels`` (what :func:`near_duplicates` returns) lists, by
    one hash shuffle of both sides on the workers. Ray Data's own join needs polars and fails on a
    partition that one side sends no block to."""
    partitions = num_partitions or max(1, int(cluster_cpus()))
    schema = ds.schema().base_schema
    ids = labels.select_columns([id_column])
    both = map_table(ds, _tagged, schema=schema, is_label=False, id_column=id_column, partitions=partitions).union(
        map_table(ids, _tagged, schema=schema, is_label=True, id_column=id_column, partitions=partitions)
    )
    return both.groupby(PARTITION, num_partitions=partitions).map_groups(
        _unlabelled, fn_kwargs={"id_column": id_column}, batch_format="pyarrow", num_cpus=LIGHT_TASK_CPUS
    )
