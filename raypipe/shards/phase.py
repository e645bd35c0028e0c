"""Phase 4 (shard): choose what ships, tokenize it once, write per-stream Megatron shards, then the manifest.

Order of work, and why (the driver sees per-stream histograms and one row per shard, never one
per document):
1. Every document gets a selection key, a bucket hash, its UTF-8 size and its weight factor
   (:func:`raypipe.mix.selection_columns`), and a Ray Data aggregation sums bytes per key bin
   per stream on the workers.
2. The driver turns the histograms into a key threshold per stream (:class:`raypipe.mix.MixPlan`).
   Documents below it are tokenized, dealt into buckets by their hash and each bucket is written
   as one shard by one task (``shards/<stream>/...``), which also writes the bucket's
   ``documents/`` part, validates the shard, and returns one summary row.
3. The first generation writes about ``FIRST_GENERATION`` of each target with the prior's
   bytes-to-tokens rate; its summaries give the measured rate, and a second generation writes
   the next keys up to the target. No document is tokenized twice.
4. ``manifest.json`` (last) holds per-shard facts and the blend weights that draw the streams at
   the target ratio, in Megatron's ``--data-path`` form.
A previous run's manifest is deleted before its shards, so a half-rewritten output is never
marked complete, and a bad config fails before it touches a finished output.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raypipe.config import RunConfig, ShardsConfig, StorageConfig
from raypipe.mix import (
    Generation,
    KeyHistogram,
    MixError,
    MixPlan,
    StreamHistogram,
    blend_weights,
    data_path,
    realized_shares,
    selection_columns,
    units_of,
)
from raypipe.shards.layout import SHARD_KEY, bucket_keys, documents_key, shard_name
from raypipe.shards.manifest import DATASHEET, DOCUMENTS, MANIFEST, build_manifest, render_datasheet, write_manifest
from raypipe.shards.megatron import token_dtype, validate_shard, write_shard
from raypipe.shards.tokenizer import TokenizeDocs, load_tokenizer, without_surrogates
from raypipe.stage import map_table
from raypipe.storage import OutputStore
from raypipe.streams import DOC_SCHEMA

log = logging.getLogger(__name__)

INPUT_SCHEMA = pa.schema([*DOC_SCHEMA, ("seed_similarity", pa.float64()), ("agent_score", pa.float64())])
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


def _as_text(value: Any) -> str | None:
    """A string Arrow can hold (UTF-8, so lone surrogates are repaired), or None for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = value if isinstance(value, str) else str(value)
    try:
        text.encode()
    except UnicodeEncodeError:
        return without_surrogates(text)
    return text


class NormalizeStream:
    """Brings one stream's rows to ``INPUT_SCHEMA`` (missing optional columns become nulls), so streams union."""

    def __init__(self, stream: str):
        self.stream = stream

    def __call__(self, batch: pd.DataFrame) -> pa.Table:
        out = pd.DataFrame(index=batch.index)
        for field in INPUT_SCHEMA:
            floating = pa.types.is_floating(field.type)
            if field.name == "stream":
                out["stream"] = self.stream
            elif field.name not in batch:
                out[field.name] = np.nan if floating else None
            elif floating:
                out[field.name] = pd.to_numeric(batch[field.name], errors="coerce")
            else:
                out[field.name] = batch[field.name].map(_as_text)
        return pa.Table.from_pandas(out, schema=INPUT_SCHEMA, preserve_index=False)


def pick(batch: pa.Table, stream: str, generation: int, span: Generation) -> pa.Table:
    """The rows of one generation (``span.lo <= key < span.hi``), each tagged with its shard's bucket key."""
    key = batch.column("key")
    rows = batch.filter(pc.and_(pc.greater_equal(key, span.lo), pc.less(key, span.hi)))
    units = rows.column("unit").to_numpy()
    hashes = rows.column("bucket_hash").to_numpy()
    return rows.append_column(SHARD_KEY, bucket_keys(stream, generation, units, hashes, span.buckets))


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


def prepare(data: Any, stream: str, cfg: RunConfig, seed: int) -> Any:
    """One stream as a Ray Dataset in ``INPUT_SCHEMA`` with the selection columns added (lazy)."""
    import ray.data

    ds = ray.data.from_pandas(data) if isinstance(data, pd.DataFrame) else data
    ds = map_table(ds, NormalizeStream(stream), batch_format="pandas")
    return map_table(ds, selection_columns, stream=stream, cfg=cfg.mix, seed=seed)


def histograms(prepared: Mapping[str, Any], cfg: RunConfig) -> dict[str, StreamHistogram]:
    """Bytes and documents per key bin per stream, summed on the workers (bounded, whatever the input size)."""
    from ray.data.context import ShuffleStrategy

    agg = KeyHistogram(sorted(prepared), units_of(cfg.mix))
    columns = ["stream", "key", "n_bytes", "unit"]
    parts = [ds.select_columns(columns) for _, ds in sorted(prepared.items())]
    union = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    # one small global aggregate: the sort-based exchange starts no aggregator actors
    union.context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    counts = union.aggregate(agg)
    return agg.split(counts["key_histogram"] if counts else None)


def tokenize_streams(streams: Mapping[str, Any], cfg: RunConfig) -> Any:
    """Every document of ``streams`` with ``tokens`` and ``n_tokens`` and without ``text`` (lazy)."""
    import ray.data

    parts = []
    for name in sorted(streams):
        data = streams[name]
        ds = ray.data.from_pandas(data) if isinstance(data, pd.DataFrame) else data
        parts.append(map_table(ds, NormalizeStream(name), batch_format="pandas"))
    union = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    return TokenizeDocs.apply_to(union, cfg).drop_columns(["text"])


def write_generation(
    prepared: Mapping[str, Any],
    spans: Mapping[str, Generation],
    generation: int,
    cfg: RunConfig,
    store: OutputStore,
    dtype: np.dtype,
) -> pd.DataFrame:
    """Tokenize the documents of ``spans`` and write them as shards; one summary row per shard."""
    from ray.data import TaskPoolStrategy
    from ray.data.context import ShuffleStrategy

    parts = [
        map_table(prepared[name], pick, stream=name, generation=generation, span=span)
        for name, span in sorted(spans.items())
    ]
    union = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    tokenized = TokenizeDocs.apply_to(union, cfg).drop_columns(["text"])
    # A few large groups: the sort-based shuffle groups them quickly, where the default hash
    # shuffle first starts aggregator actors (~15 s on 2 CPUs). The dataset owns a copy of the
    # DataContext, so the caller's setting is untouched.
    tokenized.context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    written = tokenized.groupby(SHARD_KEY).map_groups(
        write_bucket,
        fn_args=(store.prefix, cfg.storage, cfg.shards, dtype.name, generation),
        compute=TaskPoolStrategy(size=cfg.shards.writer_tasks),
        num_cpus=WRITER_CPUS,
        batch_format="pyarrow",
    )
    frame = written.to_pandas()
    return frame if len(frame) else pd.DataFrame(columns=SUMMARY_COLUMNS)


def _clear_previous(store: OutputStore) -> None:
    """Remove the commit marker first, then shards and document index files an earlier run left."""
    if store.exists(MANIFEST):
        store.delete(MANIFEST)
    for folder in ("shards", DOCUMENTS):
        for key in store.list(folder):
            store.delete(key)


def _check_files(store: OutputStore, shards: pd.DataFrame) -> None:
    """The output holds exactly the shards and document parts the summaries name (one listing)."""
    expected = {f"{p}.{ext}" for p in shards["path"] for ext in ("bin", "idx")}
    found = set(store.list("shards"))
    if found != expected:
        raise ValueError(
            f"shards/ differs from what the writers reported: missing {sorted(expected - found)[:5]}, "
            f"unexpected {sorted(found - expected)[:5]}"
        )
    documents = {documents_key(p) for p in shards["path"]}
    if set(store.list(DOCUMENTS)) != documents:
        raise ValueError("documents/ differs from the shards the writers reported")


def run_shard(streams: Mapping[str, Any], cfg: RunConfig, store: OutputStore, funnel: dict[str, Any]) -> dict[str, Any]:
    """Choose, tokenize and shard the streams; write ``documents/``, ``README.md`` and ``manifest.json`` last.

    ``streams`` maps a stream name (``agent``, ``code``, ``text``: the keys of ``cfg.mix.ratio``)
    to a Ray Dataset or a pandas DataFrame of documents with ``doc_id`` (unique in its stream),
    ``url``, ``text`` and, where known, ``source``, ``license``, ``seed_similarity``,
    ``agent_score``. ``funnel`` is recorded as given. Returns the manifest.
    """
    if not streams:
        raise MixError("no streams to shard: pass at least one of " + ", ".join(sorted(cfg.mix.ratio)))
    seed = cfg.mix.seed if cfg.mix.seed is not None else cfg.seed
    tokenizer = load_tokenizer(cfg.tokenizer, cfg.storage)
    dtype = token_dtype(tokenizer.vocab_size)

    prepared = {name: prepare(streams[name], name, cfg, seed) for name in sorted(streams)}
    plan = MixPlan(cfg.mix, histograms(prepared, cfg), cfg.shards.tokens_per_shard)
    first = plan.generation(first=True)
    if not first:
        raise MixError("the mix selected no documents: nothing to shard")

    _clear_previous(store)
    summaries = [write_generation(prepared, first, 0, cfg, store, dtype)]
    for name, rows in summaries[0].groupby("stream"):
        plan.measure(name, int(rows["tokens"].sum()), int(rows["text_bytes"].sum()))
    second = plan.generation(first=False)
    if second:
        summaries.append(write_generation(prepared, second, 1, cfg, store, dtype))
    written = [frame for frame in summaries if len(frame)] or summaries[:1]
    shards = pd.concat(written, ignore_index=True).sort_values("path", ignore_index=True)
    if shards.empty:
        raise MixError("the mix selected no documents: nothing to shard")
    for name, rows in shards.groupby("stream"):
        plan.measure(name, int(rows["tokens"].sum()), int(rows["text_bytes"].sum()))
    if shards["path"].duplicated().any():
        raise ValueError("two buckets wrote the same shard name")
    _check_files(store, shards)
    log.info(
        "shards: %d shards, %d tokens, %d documents", len(shards), shards["tokens"].sum(), shards["documents"].sum()
    )

    records = shards.to_dict("records")
    weights = blend_weights(records, plan.shares())
    shipped = {
        name: {
            "documents": int(rows["documents"].sum()),
            "tokens": int(rows["tokens"].sum()),
            "weighted_tokens": int((rows["tokens"] * rows["repeat"]).sum()),
        }
        for name, rows in shards.groupby("stream")
    }
    mix = plan.summary(shipped, realized_shares(records, weights))
    mix["data_path"] = data_path(records, weights)
    described = {**tokenizer.describe(), "dtype": dtype.name}
    manifest = build_manifest(cfg, records, weights, described, mix, funnel)
    store.write_text(DATASHEET, render_datasheet(manifest, cfg))
    write_manifest(store, manifest)
    return manifest
