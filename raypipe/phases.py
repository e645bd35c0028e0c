"""Phases after extraction: score (classifier + retrieval), clean (dedup + decontamination), shard.

Each phase reads the previous phase's parquet under the output prefix and writes its own, then a
completion record (``_state/<phase>/phase.json``); a rerun skips finished phases. Scores are kept
as columns and the selection as a flag with a reason (tag first, select later), so every decision
can be audited in ``candidates/`` and re-made without re-extracting.
"""

from __future__ import annotations

import io
import logging
import time
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from raypipe.config import RunConfig
from raypipe.stage import LIGHT_TASK_CPUS, map_table
from raypipe.state import RunState
from raypipe.storage import OutputStore
from raypipe.streams import DOC_SCHEMA, configured_streams

log = logging.getLogger(__name__)

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
CLEAN_SCHEMA = pa.schema(
    [
        *DOC_SCHEMA,
        ("drop_reason", pa.string()),
        ("select_reason", pa.string()),
        ("selected", pa.bool_()),
        ("quality_ok", pa.bool_()),
        ("seed_similarity", pa.float64()),
        ("agent_score", pa.float64()),
        ("nearest_seed", pa.string()),
        ("source_file", pa.string()),
        ("language", pa.string()),
    ]
)
CANDIDATE_COLUMNS = [
    "doc_id", "url", "source_file", "language", "quality_ok", "seed_similarity", "agent_score",
    "nearest_seed", "stream", "selected", "drop_reason", "duplicate_of",
]  # fmt: skip


def read_parts(store: OutputStore, folder: str, columns: list[str] | None = None):
    """A Ray Dataset over every parquet part under ``folder`` of the output prefix."""
    from raypipe.filesource import parquet_files_dataset

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
    import hashlib

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
    written = ds.map_batches(
        write_part,
        fn_kwargs={"output": cfg.output, "storage": cfg.storage, "folder": folder, "columns": columns},
        batch_format="pyarrow",
        batch_size=2048,
        num_cpus=LIGHT_TASK_CPUS,
    )
    return int(sum(row["rows"] for row in written.iter_rows()))


def load_seed_table(cfg: RunConfig, store: OutputStore) -> pd.DataFrame:
    """The seed table persisted with the index (the seeds phase's output)."""
    return pd.read_parquet(io.BytesIO(store.read_bytes(f"{cfg.retrieve.index_dir.strip('/')}/seeds.parquet")))


def _histogram(values: pd.Series, threshold: float | None, lo: float, hi: float, bins: int = 40) -> dict[str, Any]:
    import numpy as np

    finite = values.dropna().to_numpy(dtype=float)
    counts, edges = np.histogram(finite, bins=bins, range=(lo, hi))
    return {"bins": edges.round(4).tolist(), "counts": counts.tolist(), "threshold": threshold}


def run_score(cfg: RunConfig, store: OutputStore, state: RunState) -> dict[str, Any]:
    """Phase 2b: train the fastText classifier (seeds vs a reservoir sample of this crawl's pages,
    ``classify.rounds`` rounds), then score every extracted page and write ``scored/``."""
    done = state.finished("score")
    if done:
        log.info("score: already done, skipping")
        return done
    from raypipe.classify.calibrate import CalibrationSimilarity
    from raypipe.classify.classifier import load_classifier, load_rule
    from raypipe.classify.plan import add_selection
    from raypipe.classify.reservoir import sample_pages
    from raypipe.classify.rounds import run_rounds, score_frame
    from raypipe.retrieve.stage import add_retrieval

    start = time.time()
    state.set_phase("score", "running", started=start)
    reports = []
    if cfg.classify.model_uri:
        model_uri = cfg.classify.model_uri
        rule = load_rule(model_uri, cfg.storage).to_dict()
    else:
        seeds = load_seed_table(cfg, store)
        pages = sample_pages(read_parts(store, "extracted"), cfg.classify.negatives_sample_size, cfg.seed)
        log.info("score: training on %d seeds against %d sampled pages", len(seeds), len(pages))
        similarity = None
        if cfg.classify.mode != "fasttext_only":
            similarity = CalibrationSimilarity(cfg.retrieve, cfg.output, cfg.storage)

        def score_sample(uri: str, rule: Any) -> pd.DataFrame:
            return score_frame(pages, load_classifier(uri, cfg.storage), similarity)

        reports = run_rounds(seeds, pages, score_sample, cfg.classify, store, cfg.seed, similarity)
        model_uri = reports[-1].model_uri
        rule = reports[-1].rule.to_dict()

    def retrieve(ds: Any) -> Any:
        return add_retrieval(ds, cfg.retrieve, cfg.output, cfg.storage)

    ds = add_selection(read_parts(store, "extracted"), cfg.classify, model_uri, cfg.storage, retrieve=retrieve)
    rows = write_dataset(ds, cfg, store, SCORED)
    scored = read_parts(
        store, SCORED, columns=["seed_similarity", "agent_score", "selected", "drop_reason", "url"]
    ).to_pandas()
    selected = scored[scored["selected"].fillna(False).astype(bool)]
    summary = {
        "pages": rows,
        "selected": len(selected),
        "embedded": int(scored["seed_similarity"].notna().sum()),
        "mode": rule.get("mode"),
        "rule": rule,
        "rounds": [
            {
                "round": r.round,
                "model": r.model_uri.removeprefix(cfg.output.rstrip("/") + "/"),  # relative: stats move with the run
                **r.counts,
                "metrics": r.metrics.get("held_out"),
            }
            for r in reports
        ],
        "drop_reasons": scored["drop_reason"].fillna("selected").value_counts().to_dict(),
        "top_domains": selected["url"].str.extract(r"^[a-z]+://([^/:]+)")[0].value_counts().head(20).to_dict(),
        "histograms": {
            "seed_similarity": _histogram(scored["seed_similarity"], rule.get("similarity_threshold"), -0.2, 1.0),
            "agent_score": _histogram(scored["agent_score"], rule.get("ft_threshold"), 0.0, 1.0),
        },
        "seconds": round(time.time() - start, 2),
    }
    state.set_phase("score", "done", started=start, summary=summary)
    return summary


def _as_clean_table(frame: pd.DataFrame) -> pa.Table:
    """One schema for pages and seeds, so the two can be unioned and shuffled together."""
    frame = frame.reindex(columns=CLEAN_SCHEMA.names)
    frame = frame.astype(object).where(frame.notna(), None)
    return pa.Table.from_pandas(frame, schema=CLEAN_SCHEMA, preserve_index=False)


def clean_input(batch: pd.DataFrame) -> pa.Table:
    """Scored pages -> clean-phase rows: selected pages are the ``agent`` stream, the other pages
    that passed quality the ``text`` stream (their selection reason kept in ``select_reason``)."""
    out = batch.copy()
    selected = out["selected"].fillna(False).astype(bool)
    text = ~selected & out["quality_ok"].fillna(False).astype(bool)
    out["stream"] = None
    out.loc[selected, "stream"] = "agent"
    out.loc[text, "stream"] = "text"
    out["select_reason"] = out["drop_reason"].where(text, None)
    out.loc[selected | text, "drop_reason"] = None
    out["source"] = "web"
    out["license"] = None
    return _as_clean_table(out)


def seed_documents(seeds: pd.DataFrame) -> pa.Table:
    """Seeds join the agent stream (and so dedup and decontamination) as documents of their own."""
    return _as_clean_table(
        pd.DataFrame(
            {
                "doc_id": "seed:" + seeds["id"].astype(str),
                "url": "seed:" + seeds["id"].astype(str),
                "text": seeds["text"],
                "stream": "agent",
                "source": "seed:" + seeds["source"].astype(str),
                "license": seeds["license"],
                "selected": True,
                "quality_ok": True,
            }
        )
    )


def dataset_documents(batch: pd.DataFrame) -> pa.Table:
    """Documents of a configured dataset (``mix.code`` / ``mix.text``) as clean-phase rows: they
    are decontaminated and deduplicated like pages (benchmark answers are code)."""
    return _as_clean_table(batch)


def run_clean_phase(cfg: RunConfig, store: OutputStore, state: RunState) -> dict[str, Any]:
    """Phase 3: decontamination, exact and near dedup over agent pages, text pages, seeds and the
    configured code and text datasets, global across the run; writes ``clean/documents`` (with
    text) and ``candidates/`` (every web page, no text)."""
    done = state.finished("clean")
    if done:
        log.info("clean: already done, skipping")
        return done
    import ray.data

    from raypipe.clean import run_clean
    from raypipe.decontam import build_index

    start = time.time()
    state.set_phase("clean", "running", started=start)
    pages = read_parts(store, SCORED).map_batches(clean_input, batch_format="pandas", num_cpus=LIGHT_TASK_CPUS)
    seed_table = load_seed_table(cfg, store)
    seeds = ray.data.from_arrow(seed_documents(seed_table))
    datasets = [
        map_table(ds, dataset_documents, batch_format="pandas")
        for ds in configured_streams(cfg.mix, cfg.storage).values()
    ]
    # Keys found in the seeds (API docs the benchmarks share, PROVENANCE.md) are dropped from the
    # index, so no seed is ever flagged while benchmark-only questions, calls and schemas are.
    index = build_index(cfg.decontam, cfg.storage, allowed=seed_table["text"]) if cfg.decontam.enabled else None
    cleaned, clean_stats = run_clean(pages.union(seeds, *datasets), cfg, store, index=index)
    rows = write_dataset(cleaned, cfg, store, CLEAN)
    final = read_parts(store, CLEAN).map_batches(finalize_candidates, batch_format="pandas", num_cpus=LIGHT_TASK_CPUS)
    pages_only = final.filter(lambda row: row["source"] == "web", num_cpus=LIGHT_TASK_CPUS)
    candidates = write_dataset(pages_only, cfg, store, CANDIDATES, columns=CANDIDATE_COLUMNS)
    summary = {"documents": rows, "candidates": candidates, **clean_stats, "seconds": round(time.time() - start, 2)}
    state.set_phase("clean", "done", started=start, summary=summary)
    return summary


def finalize_candidates(batch: pd.DataFrame) -> pd.DataFrame:
    """Final verdict per page: selected only if it was selected and survived cleaning; otherwise
    the clean phase's reason, or the selection rule's reason for a page kept as general text."""
    out = batch.copy()
    clean_drop = out["drop_reason"].notna()
    out["selected"] = out["selected"].fillna(False).astype(bool) & ~clean_drop & out["stream"].eq("agent")
    is_text = out["stream"].eq("text") & ~clean_drop
    out.loc[is_text, "drop_reason"] = out.loc[is_text, "select_reason"]
    if "duplicate_of" not in out:
        out["duplicate_of"] = None
    return out


def run_shard_phase(cfg: RunConfig, store: OutputStore, state: RunState, funnel: list[dict]) -> dict[str, Any]:
    """Phase 4: the streams (agent = selected clean pages + seeds; text = clean general pages or a
    configured dataset; code = the configured dataset) mixed by tokens into Megatron shards. Every
    stream is read from ``clean/documents``: the configured datasets went through the clean phase."""
    from raypipe.shards.phase import run_shard

    start = time.time()
    state.set_phase("shard", "running", started=start)
    docs = read_parts(store, CLEAN)
    keep = ["doc_id", "url", "text", "stream", "source", "license", "seed_similarity", "agent_score"]
    survivors = docs.filter(lambda row: row["drop_reason"] is None, num_cpus=LIGHT_TASK_CPUS)

    def stream(name: str, web: bool = True) -> Any:
        def wanted(row: dict[str, Any]) -> bool:
            return row["stream"] == name and (web or row["source"] != "web")

        return survivors.filter(wanted, num_cpus=LIGHT_TASK_CPUS).select_columns(keep)

    # A configured text dataset replaces the crawl's general pages as the text stream.
    streams: dict[str, Any] = {"agent": stream("agent"), "text": stream("text", web=cfg.mix.text is None)}
    if cfg.mix.code is not None:
        streams["code"] = stream("code")
    missing = sorted(set(cfg.mix.ratio) - set(streams))
    if missing:
        raise RuntimeError(f"mix.ratio names streams with no source: {missing} (set mix.code / mix.text)")
    manifest = run_shard({k: v for k, v in streams.items() if k in cfg.mix.ratio}, cfg, store, {"stages": funnel})
    state.set_phase("shard", "done", started=start, shards=len(manifest["shards"]))
    return manifest
