"""Attaching the duplicate labels (only the dropped rows, keyed by ``doc_id``) back to every row,
by one hash shuffle of both sides on the workers."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import ray.data

from raypipe.dedup.normalize import partition_of
from raypipe.dedup.shuffle import PARTITION
from raypipe.stage import LIGHT_TASK_CPUS, map_table

_LABELS = pa.schema([("_label_reason", pa.string()), ("_label_of", pa.string())])
_IS_LABEL = "_is_label"


def _keyed(batch: pa.Table, schema: pa.Schema, is_label: bool, partitions: int) -> pa.Table:
    """Rows of either side of the label merge in the one schema both share (the fingerprints' and
    the label columns; absent ones null), with a side marker and the hash partition of ``doc_id``."""
    n, present = batch.num_rows, set(batch.column_names)
    columns = [batch.column(f.name).cast(f.type) if f.name in present else pa.nulls(n, f.type) for f in schema]
    table = pa.Table.from_arrays(columns, schema=schema)
    table = table.append_column(_IS_LABEL, pa.array([is_label] * n, pa.bool_()))
    partition = partition_of(pd.Series(table.column("doc_id").to_pylist(), dtype=object), partitions)
    return table.append_column(PARTITION, pa.array(partition, pa.int64()))


def _merge_labels(group: pa.Table) -> pa.Table:
    """One hash partition: each row with its label, if any (exact before near for a row with both)."""
    is_label = group.column(_IS_LABEL)
    labels = group.filter(is_label).select(["doc_id", *_LABELS.names]).sort_by([("_label_reason", "descending")])
    lookup = {d: (r, o) for d, r, o in zip(*(labels.column(c).to_pylist() for c in labels.column_names), strict=True)}
    rows = group.filter(pc.invert(is_label)).drop_columns([*_LABELS.names, _IS_LABEL, PARTITION])
    found = [lookup.get(d, (None, None)) for d in rows.column("doc_id").to_pylist()]
    for i, field in enumerate(_LABELS):
        rows = rows.append_column(field, pa.array([f[i] for f in found], field.type))
    return rows


def attach_labels(
    rows: ray.data.Dataset, labels: ray.data.Dataset, schema: pa.Schema, partitions: int
) -> ray.data.Dataset:
    """``rows`` with ``_label_reason``/``_label_of`` from ``labels`` (``doc_id``-keyed), by one hash
    shuffle of both sides together. Ray Data's own join fails on a partition that one side sends
    no block to (seen with a few labels over two partitions), and needs polars."""
    schema = pa.schema([f for f in schema if f.name not in _LABELS.names] + list(_LABELS))
    both = map_table(rows, _keyed, schema=schema, is_label=False, partitions=partitions).union(
        map_table(labels, _keyed, schema=schema, is_label=True, partitions=partitions)
    )
    return both.groupby(PARTITION, num_partitions=partitions).map_groups(
        _merge_labels, batch_format="pyarrow", num_cpus=LIGHT_TASK_CPUS
    )
