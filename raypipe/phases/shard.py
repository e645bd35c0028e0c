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

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from raypipe.config import RunConfig
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
from raypipe.shards.inputs import NormalizeStream, pick
from raypipe.shards.layout import SHARD_KEY, documents_key
from raypipe.shards.tokenizer import TokenizeDocs, load_tokenizer
from raypipe.shards.writer import SUMMARY_COLUMNS, WRITER_CPUS, write_bucket
from raypipe.stage import map_table
from raypipe.store.manifest import DATASHEET, DOCUMENTS, MANIFEST, build_manifest, render_datasheet, write_manifest
from raypipe.store.megatron import token_dtype
from raypipe.store.parts import CLEAN, read_parts
from raypipe.store.state import RunState
from raypipe.store.storage import OutputStore

log = logging.getLogger(__name__)


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


STREAM_COLUMNS = ["doc_id", "url", "text", "stream", "source", "license", "seed_similarity", "agent_score"]


def stream_rows(batch: pa.Table, name: str, web: bool) -> pa.Table:
    """The rows of ``clean/documents`` in stream ``name`` (without web pages unless ``web``), by one
    Arrow filter per batch rather than a Python call per row."""
    mask = pc.equal(batch.column("stream"), name)
    if not web:
        mask = pc.and_(mask, pc.not_equal(batch.column("source"), "web"))
    return batch.filter(pc.fill_null(mask, False))


def run(
    cfg: RunConfig, store: OutputStore, state: RunState, funnel: list[dict], warnings: list[str] | None = None
) -> dict[str, Any]:
    """Phase 4: the streams (agent = selected clean pages + seeds; text = clean general pages or a
    configured dataset; code = the configured dataset) mixed by tokens into Megatron shards. Every
    stream is read from ``clean/documents``: the configured datasets went through the clean phase.
    ``warnings`` (an earlier phase's, such as a missing benchmark source) go into the datasheet."""
    start = time.time()
    state.set_phase("shard", "running", started=start)
    docs = read_parts(store, CLEAN, columns=STREAM_COLUMNS)

    def stream(name: str, web: bool = True) -> Any:
        return map_table(docs, stream_rows, name=name, web=web)

    # A configured text dataset replaces the crawl's general pages as the text stream.
    streams: dict[str, Any] = {"agent": stream("agent"), "text": stream("text", web=cfg.mix.text is None)}
    if cfg.mix.code is not None:
        streams["code"] = stream("code")
    missing = sorted(set(cfg.mix.ratio) - set(streams))
    if missing:
        raise RuntimeError(f"mix.ratio names streams with no source: {missing} (set mix.code / mix.text)")
    run_info = {"stages": funnel, "warnings": list(warnings or [])}
    manifest = run_shard({k: v for k, v in streams.items() if k in cfg.mix.ratio}, cfg, store, run_info)
    state.set_phase("shard", "done", started=start, shards=len(manifest["shards"]))
    return manifest
