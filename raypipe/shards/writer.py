"""The shard writer: one bucket of tokenized documents -> one Megatron shard, its ``documents/``
part and one summary row (all the manifest needs), written by the task that holds the bucket."""

from __future__ import annotations

import io
import json
from dataclasses import asdict

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raypipe.config import ShardsConfig, StorageConfig
from raypipe.shards.layout import documents_key, shard_name
from raypipe.store.megatron import validate_shard, write_shard
from raypipe.store.storage import OutputStore

INDEX_COLUMNS = ["shard", "sequence", "stream", "source", "doc_id", "url", "license", "tokens", "repeat"]
SCORE_COLUMNS = ["seed_similarity", "agent_score"]
SUMMARY_COLUMNS = [
    "path",
    "documents",
    "tokens",
    "bin_bytes",
    "sha256",
    "idx_sha256",
    "stream",
    "repeat",
    "generation",
    "text_bytes",
    "sources",
]
"""One row per written shard: what :func:`write_bucket` returns and the manifest is built from."""
WRITER_CPUS = 0.5
"""CPUs per shard-writer task: it mostly waits on storage."""


def write_bucket(
    group: pa.Table, output: str, storage: StorageConfig, shards: ShardsConfig, dtype: str, generation: int
) -> pa.Table:
    """Write one bucket as one shard and its ``documents/`` part; return the shard's summary row.

    Documents go in ``bucket_hash`` order (a seeded shuffle, the same on every run); the shard is
    named by its documents, validated after writing, and described by one row (what the manifest needs).
    """
    group = group.sort_by([("bucket_hash", "ascending"), ("doc_id", "ascending")])
    stream = group.column("stream")[0].as_py()
    doc_ids = group.column("doc_id").to_pylist()
    path = shard_name(shards.prefix, stream, doc_ids)
    tokens = group.column("tokens").combine_chunks()
    offsets = tokens.offsets.to_numpy()
    offsets = offsets - offsets[0]  # a sliced list array's offsets start where its slice does
    values = tokens.flatten().to_numpy()
    sequences = [values[offsets[i] : offsets[i + 1]] for i in range(len(doc_ids))]
    lengths = np.diff(offsets).astype(np.int64)
    store = OutputStore(output, storage)
    files = write_shard(store, path, sequences, np.dtype(dtype), shards.write_chunk_bytes)
    validate_shard(store, files, np.dtype(dtype), lengths)

    units = group.column("unit").to_numpy()
    index = pa.table(
        {
            "shard": [path] * len(doc_ids),
            "sequence": np.arange(len(doc_ids), dtype=np.int64),
            "stream": group.column("stream"),
            "source": group.column("source"),
            "doc_id": group.column("doc_id"),
            "url": group.column("url"),
            "license": group.column("license"),
            "tokens": lengths,
            "repeat": units,
            **{c: group.column(c) for c in SCORE_COLUMNS},
        }
    )
    buf = io.BytesIO()
    pq.write_table(index, buf)
    store.write_bytes(documents_key(path), buf.getvalue())

    frame = pd.DataFrame(
        {"source": group.column("source").to_pandas().fillna("unknown"), "license": group.column("license").to_pandas()}
    )
    frame["tokens"] = lengths
    sources = {
        src: {
            "documents": len(rows),
            "tokens": int(rows["tokens"].sum()),
            "licenses": sorted({str(v) for v in rows["license"].dropna()}),
        }
        for src, rows in frame.groupby("source", sort=True)
    }
    summary = {
        **asdict(files),
        "stream": stream,
        "repeat": int(units[0]),
        "generation": generation,
        "text_bytes": int(pc.sum(group.column("n_bytes")).as_py()),
        "sources": json.dumps(sources, sort_keys=True),
    }
    return pa.Table.from_pylist([summary])
