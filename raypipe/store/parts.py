"""Parquet parts under the output prefix: the folders each phase writes, their writers and readers.

Every part is named by a hash of its document ids, so a retried task rewrites the same key
(idempotent) instead of adding a copy, and a phase's output is the set of parts in its folder.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raypipe.config import RunConfig, StorageConfig
from raypipe.stage import map_table
from raypipe.store.storage import OutputStore
from raypipe.store.warc import file_stem

EXTRACTED = "extracted"
SCORED = "scored"
CLEAN = "clean/documents"
CANDIDATES = "candidates"
SCORE_TYPES = {
    "seed_similarity": pa.float64(),
    "agent_score": pa.float64(),
    "nearest_seed": pa.string(),
    "selected": pa.bool_(),
    "drop_reason": pa.string(),
}
SUMMARY_SCHEMA = pa.schema(
    [
        ("source_file", pa.string()),
        ("rows", pa.int64()),
        ("file_stats", pa.string()),
        ("part", pa.string()),
        ("drops", pa.string()),
        ("languages", pa.string()),
    ]
)


class PartWriter:
    """Writes each batch's documents as parquet parts, one per input file, named by content.

    The name is a hash of the part's document ids, so a retried task rewrites the same key
    (idempotent) instead of adding a copy. Returns one summary row per file group.
    """

    def __init__(self, output: str, storage: StorageConfig, subdir: str):
        self.store = OutputStore(output, storage)
        self.subdir = subdir

    def __call__(self, batch: pa.Table) -> pa.Table:
        summaries = []
        sources = batch.column("source_file")
        for source in sorted(set(sources.to_pylist())):
            group = batch.filter(pc.equal(sources, source))
            is_doc = pc.is_valid(group.column("url"))
            docs = group.filter(is_doc).drop_columns(["file_stats"]).sort_by("record_index")
            markers = group.filter(pc.invert(is_doc)).column("file_stats").drop_null().to_pylist()
            summary: dict[str, Any] = {"source_file": source, "rows": docs.num_rows}
            summary["file_stats"] = markers[0] if markers else None
            if docs.num_rows:
                digest = hashlib.sha1("\n".join(docs.column("doc_id").to_pylist()).encode()).hexdigest()[:16]
                key = f"{self.subdir}/{file_stem(source)}/part-{digest}.parquet"
                buf = io.BytesIO()
                pq.write_table(docs, buf, compression="zstd")
                self.store.write_bytes(key, buf.getvalue())
                summary["part"] = key
                summary["drops"] = json.dumps(Counter(r or "kept" for r in docs.column("drop_reason").to_pylist()))
                summary["languages"] = json.dumps(Counter(r or "none" for r in docs.column("language").to_pylist()))
            summaries.append(summary)
        return pa.Table.from_pylist(summaries, schema=SUMMARY_SCHEMA)


def read_parts(store: OutputStore, folder: str, columns: list[str] | None = None):
    """A Ray Dataset over every parquet part under ``folder`` of the output prefix."""
    from raypipe.store.filesource import parquet_files_dataset

    files = [store.key(k) for k in store.list(folder) if k.endswith(".parquet")]
    if not files:
        raise RuntimeError(f"no parquet parts under {store.uri(folder)}: did the previous phase run?")
    return parquet_files_dataset(files, store.arrow_filesystem(), columns=columns)


def write_part(batch: pa.Table, output: str, storage: Any, folder: str, columns: list[str] | None) -> pa.Table:
    """Write one batch as a parquet part named by a hash of its document ids (idempotent on retry).

    Typed score columns are cast first so that parts written from different batches share a schema.
    A light task, not an actor: an actor would hold its CPU share on one node for the whole plan,
    and Ray's shuffle map tasks (one whole CPU, soft affinity to the node holding their block) then
    wait forever for that node on 1-CPU workers. The clean phase's final join hung that way.
    """
    if batch.num_rows == 0:
        return pa.table({"part": pa.array([], pa.string()), "rows": pa.array([], pa.int64())})
    if columns:
        batch = batch.select([c for c in columns if c in batch.column_names])
    for name, typ in SCORE_TYPES.items():
        if name in batch.column_names and batch.schema.field(name).type != typ:
            batch = batch.set_column(batch.schema.get_field_index(name), name, batch.column(name).cast(typ))
    ids = sorted(batch.column("doc_id").to_pylist())
    key = f"{folder}/part-{hashlib.sha1(chr(10).join(ids).encode()).hexdigest()[:20]}.parquet"
    buf = io.BytesIO()
    pq.write_table(batch, buf, compression="zstd")
    OutputStore(output, storage).write_bytes(key, buf.getvalue())
    return pa.table({"part": [key], "rows": [batch.num_rows]})


def write_dataset(ds: Any, cfg: RunConfig, store: OutputStore, folder: str, columns: list[str] | None = None) -> int:
    """Stream a dataset into parquet parts under ``folder`` (replacing what was there); returns rows."""
    store.delete(folder)
    written = map_table(
        ds, write_part, batch_size=2048, output=cfg.output, storage=cfg.storage, folder=folder, columns=columns
    )
    return int(sum(row["rows"] for row in written.iter_rows()))


def load_seed_table(cfg: RunConfig, store: OutputStore) -> pd.DataFrame:
    """The seed table persisted with the index (the seeds phase's output)."""
    return pd.read_parquet(io.BytesIO(store.read_bytes(f"{cfg.retrieve.index_dir.strip('/')}/seeds.parquet")))
