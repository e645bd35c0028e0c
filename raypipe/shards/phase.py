"""Phase 4 (shard): mix the streams by tokens, tokenize, write Megatron shards, then the manifest.

Order of work, and why:
1. Tokenize every candidate document once on a CPU actor pool (the mix needs exact token counts,
   and the shards need the ids; the text is dropped right after).
2. Plan the mix and the shard layout on the driver from ``(stream, doc_id, n_tokens)`` only,
   sorted by key, so the result does not depend on worker count or arrival order.
3. Group the token arrays by shard and write each shard in one task (a bounded number at once).
4. Validate every shard, write the document index and the datasheet, and ``manifest.json`` last.
Once the plan stands, a previous run's manifest is deleted before its shards, so a half-rewritten
output is never marked complete, and a bad config fails before it touches a finished output.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from raypipe.config import RunConfig, ShardsConfig, StorageConfig
from raypipe.mix import MixError, plan_mix
from raypipe.shards.layout import shard_layout, shard_name
from raypipe.shards.manifest import (
    DATASHEET,
    DOCUMENTS,
    MANIFEST,
    build_manifest,
    documents_index,
    render_datasheet,
    write_documents_index,
    write_manifest,
)
from raypipe.shards.megatron import ShardFiles, token_dtype, validate_shard, write_shard
from raypipe.shards.tokenizer import TokenizeStage, load_tokenizer, without_surrogates
from raypipe.stage import LIGHT_TASK_CPUS, actor_cpus, cluster_cpus
from raypipe.storage import OutputStore
from raypipe.streams import DOC_SCHEMA

log = logging.getLogger(__name__)

INPUT_SCHEMA = pa.schema([*DOC_SCHEMA, ("seed_similarity", pa.float64()), ("agent_score", pa.float64())])


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


def attach_layout(batch: pd.DataFrame, layout: pd.DataFrame) -> pd.DataFrame:
    """Joins tokenized documents to their planned places: one row per copy; documents not selected leave."""
    joined = batch[["stream", "doc_id", "tokens"]].merge(layout, on=["stream", "doc_id"], how="inner")
    return joined[["shard", "sequence", "n_tokens", "tokens"]]


def write_shard_group(
    group: pd.DataFrame, output: str, storage: StorageConfig, shards: ShardsConfig, dtype: str
) -> pd.DataFrame:
    """Writes the one shard a group holds, in planned sequence order; returns its file facts."""
    group = group.sort_values("sequence")
    index = int(group["shard"].iloc[0])
    if not np.array_equal(group["sequence"].to_numpy(), np.arange(len(group))):
        raise ValueError(f"shard {index}: sequences are not 0..{len(group) - 1}; the layout join lost rows")
    sequences = group["tokens"].tolist()
    if [len(s) for s in sequences] != group["n_tokens"].tolist():
        raise ValueError(f"shard {index}: token arrays differ in length from the planned counts")
    store = OutputStore(output, storage)
    path = shard_name(shards.prefix, index)
    files = write_shard(store, path, sequences, np.dtype(dtype), shards.write_chunk_bytes)
    return pd.DataFrame([{"shard": index, **asdict(files)}])


def _pool_size(cfg: RunConfig) -> int:
    return cfg.tokenizer.max_actors or max(1, int(cluster_cpus()))


def tokenize_streams(streams: Mapping[str, Any], cfg: RunConfig):
    """A materialized Ray Dataset of every document with ``tokens`` and ``n_tokens``, without ``text``."""
    import ray.data
    from ray.data import ActorPoolStrategy

    if not streams:
        raise MixError("no streams to tokenize: pass at least one of " + ", ".join(sorted(cfg.mix.ratio)))
    parts = []
    for name in sorted(streams):
        data = streams[name]
        ds = ray.data.from_pandas(data) if isinstance(data, pd.DataFrame) else data
        # light: the tokenizer pool holds its CPUs for the whole plan (on a 1-CPU Ray, half of it)
        parts.append(ds.map_batches(NormalizeStream(name), batch_format="pandas", num_cpus=LIGHT_TASK_CPUS))
    union = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    tok = cfg.tokenizer
    pool = _pool_size(cfg)
    return (
        union.map_batches(
            TokenizeStage,
            fn_constructor_args=(tok, cfg.storage),
            compute=ActorPoolStrategy(min_size=1, max_size=pool),
            num_cpus=actor_cpus(tok.actor_cpus, pool, cluster_cpus()),
            batch_size=tok.batch_size,
            batch_format="pandas",
        )
        .drop_columns(["text"])
        .materialize()
    )


def _clear_previous(store: OutputStore) -> None:
    """Remove the commit marker first, then shards and document index files an earlier run left."""
    if store.exists(MANIFEST):
        store.delete(MANIFEST)
    for folder in ("shards", DOCUMENTS):
        for key in store.list(folder):
            store.delete(key)


def run_shard(streams: Mapping[str, Any], cfg: RunConfig, store: OutputStore, funnel: dict[str, Any]) -> dict[str, Any]:
    """Mix, tokenize and shard the streams; write ``documents/``, ``README.md`` and ``manifest.json`` last.

    ``streams`` maps a stream name (``agent``, ``code``, ``text``: the keys of ``cfg.mix.ratio``)
    to a Ray Dataset or a pandas DataFrame of documents with ``doc_id`` (unique in its stream),
    ``url``, ``text`` and, where known, ``source``, ``license``, ``seed_similarity``,
    ``agent_score``. ``funnel`` is recorded as given. Returns the manifest.
    """
    from ray.data import TaskPoolStrategy
    from ray.data.context import ShuffleStrategy

    seed = cfg.mix.seed if cfg.mix.seed is not None else cfg.seed
    tokenizer = load_tokenizer(cfg.tokenizer, cfg.storage)
    dtype = token_dtype(tokenizer.vocab_size)

    tokenized = tokenize_streams(streams, cfg)
    meta = tokenized.drop_columns(["tokens"]).to_pandas()
    plan = plan_mix(meta, cfg.mix, seed)
    layout = shard_layout(plan.selection, cfg.shards.tokens_per_shard, seed)
    if layout.empty:
        raise MixError("the mix selected no documents: nothing to shard")
    n_shards = int(layout["shard"].max()) + 1
    log.info("mix: %d sequences, %d tokens in %d shards", len(layout), int(layout["n_tokens"].sum()), n_shards)

    _clear_previous(store)
    attached = tokenized.map_batches(attach_layout, fn_args=(layout,), batch_format="pandas")
    # A handful of large groups: the sort-based shuffle groups them in well under a second here,
    # where the default hash shuffle first starts aggregator actors (~15 s on 2 CPUs). The
    # materialized dataset owns a copy of the DataContext, so the caller's setting is untouched.
    attached.context.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    written = (
        attached.groupby("shard")
        .map_groups(
            write_shard_group,
            fn_args=(store.prefix, cfg.storage, cfg.shards, dtype.name),
            compute=TaskPoolStrategy(size=cfg.shards.writer_tasks),
            num_cpus=0.5,
            batch_format="pandas",
        )
        .to_pandas()
        .sort_values("shard")
    )
    if written["shard"].tolist() != list(range(n_shards)):
        raise ValueError(f"wrote shards {written['shard'].tolist()}, planned 0..{n_shards - 1}")
    shards = [ShardFiles(**row) for row in written.drop(columns=["shard"]).to_dict("records")]
    for i, files in enumerate(shards):
        planned = layout.loc[layout["shard"] == i].sort_values("sequence")["n_tokens"].to_numpy()
        validate_shard(store, files, dtype, planned)

    index = documents_index(layout, meta, cfg.shards.prefix)
    write_documents_index(store, index)
    described = {**tokenizer.describe(), "dtype": dtype.name}
    manifest = build_manifest(cfg, shards, index, described, plan.summary(), funnel)
    store.write_text(DATASHEET, render_datasheet(manifest, cfg))
    write_manifest(store, manifest)
    return manifest
