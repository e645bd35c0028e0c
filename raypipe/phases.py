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
from raypipe.extract.stage import EXTRACT_TAGS
from raypipe.stage import LIGHT_TASK_CPUS, map_table
from raypipe.state import RunState
from raypipe.storage import OutputStore
from raypipe.streams import DOC_SCHEMA, configured_streams
from raypipe.summary import SCORE_COLUMNS, score_summary

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
        ("seed_similarity", pa.float64()),
        ("agent_score", pa.float64()),
        ("nearest_seed", pa.string()),
        ("source_file", pa.string()),
        *EXTRACT_TAGS,
    ]
)
CANDIDATE_COLUMNS = [
    "doc_id", "url", "source_file", "seed_similarity", "agent_score", "nearest_seed", "contaminated",
    "duplicate", "duplicate_of", "stream", "selected", "drop_reason", *EXTRACT_TAGS.names,
]  # fmt: skip
"""``candidates/``: every page's verdict and every tag the verdict came from (no text), so that
``raypipe.select.reselect`` can re-make it with other thresholds."""


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
    written = map_table(
        ds, write_part, batch_size=2048, output=cfg.output, storage=cfg.storage, folder=folder, columns=columns
    )
    return int(sum(row["rows"] for row in written.iter_rows()))


def load_seed_table(cfg: RunConfig, store: OutputStore) -> pd.DataFrame:
    """The seed table persisted with the index (the seeds phase's output)."""
    return pd.read_parquet(io.BytesIO(store.read_bytes(f"{cfg.retrieve.index_dir.strip('/')}/seeds.parquet")))


def _headline(reports: list[Any], mode: str | None) -> dict[str, Any] | None:
    """The final round's held-out precision at the configured and reported prevalences, with 95%
    intervals, beside recall: the selection's headline figure (a balanced F1 says little about a
    crawl where 1% of pages are agent pages). None when a given model was used (no held-out data)."""
    if not reports:
        return None
    return (reports[-1].metrics.get("held_out") or {}).get(mode, {}).get("at_prevalence")


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
    from raypipe.extract import extract_rules
    from raypipe.retrieve.stage import add_retrieval, retrieval_resources
    from raypipe.runtime import resources_within

    start = time.time()
    state.set_phase("score", "running", started=start)
    reports = []
    if cfg.classify.model_uri:
        model_uri = cfg.classify.model_uri
        rule = load_rule(model_uri, cfg.storage).to_dict()
    else:
        seeds = load_seed_table(cfg, store)
        kept = sum(u.get("drops", {}).get("kept", 0) for u in state.units("extract").values())
        pages = sample_pages(
            read_parts(store, "extracted"), cfg.classify.negatives_sample_size, cfg.seed, population=kept
        )
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

    ds = add_selection(
        read_parts(store, "extracted"),
        cfg.classify,
        model_uri,
        cfg.storage,
        retrieve=retrieve,
        drop_rules=extract_rules(cfg.extract, cfg.quality),
    )
    with resources_within(retrieval_resources(cfg.retrieve), cfg.ray.resource_wait_s, "retrieve.num_gpus"):
        rows = write_dataset(ds, cfg, store, SCORED)
    thresholds = {"seed_similarity": rule.get("similarity_threshold"), "agent_score": rule.get("ft_threshold")}
    scored = score_summary(read_parts(store, SCORED, columns=SCORE_COLUMNS), thresholds)
    summary = {
        "pages": rows,
        "selected": scored["selected"],
        "embedded": scored["embedded"],
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
        "precision_at_prevalence": _headline(reports, rule.get("mode")),
        "drop_reasons": scored["drop_reasons"],
        "top_domains": scored["top_domains"],
        "histograms": scored["histograms"],
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
    """Scored pages -> clean-phase rows. The score phase's verdict routed each kept page to a
    stream; a ``text`` page's reason for not being selected moves to ``select_reason`` so that
    ``drop_reason`` names only pages out of the corpus (those take no part in cleaning)."""
    out = batch.copy()
    kept = out["stream"].notna()
    out["select_reason"] = out["drop_reason"].where(out["stream"].eq("text"), None)
    out["drop_reason"] = out["drop_reason"].where(~kept, None)
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

    start = time.time()
    state.set_phase("clean", "running", started=start)
    pages = map_table(read_parts(store, SCORED), clean_input, batch_format="pandas")
    seed_table = load_seed_table(cfg, store)
    seeds = ray.data.from_arrow(seed_documents(seed_table))
    datasets = [
        map_table(ds, dataset_documents, batch_format="pandas")
        for ds in configured_streams(cfg.mix, cfg.storage).values()
    ]
    # Keys found in the seeds (API docs the benchmarks share, PROVENANCE.md) are dropped from the
    # index, so no seed is ever flagged while benchmark-only questions, calls and schemas are.
    cleaned, clean_stats = run_clean(pages.union(seeds, *datasets), cfg, store, allowed=seed_table["text"])
    rows = write_dataset(cleaned, cfg, store, CLEAN)
    pages_only = read_parts(store, CLEAN).filter(lambda row: row["source"] == "web", num_cpus=LIGHT_TASK_CPUS)
    candidates = write_dataset(pages_only, cfg, store, CANDIDATES, columns=CANDIDATE_COLUMNS)
    summary = {"documents": rows, "candidates": candidates, **clean_stats, "seconds": round(time.time() - start, 2)}
    summary.update(clean_funnel(clean_stats))
    state.set_phase("clean", "done", started=start, summary=summary)
    return summary


def clean_funnel(clean_stats: dict[str, Any]) -> dict[str, Any]:
    """The clean phase's rows of the run's funnel and its drop reasons: documents that reached it
    (quality-kept pages of both streams, plus the seeds) and those it kept; a page dropped earlier
    is counted under the phase that dropped it, not again here."""
    entering = clean_stats["documents"] - clean_stats["dropped_earlier"]
    return {
        "funnel": [
            {"stage": "clean_input", "documents": entering},
            {"stage": "clean_kept", "documents": clean_stats["kept"]},
        ],
        "drop_reasons": {k: v for k, v in sorted(clean_stats["dropped"].items()) if v},
    }


def run_shard_phase(
    cfg: RunConfig, store: OutputStore, state: RunState, funnel: list[dict], warnings: list[str] | None = None
) -> dict[str, Any]:
    """Phase 4: the streams (agent = selected clean pages + seeds; text = clean general pages or a
    configured dataset; code = the configured dataset) mixed by tokens into Megatron shards. Every
    stream is read from ``clean/documents``: the configured datasets went through the clean phase.
    ``warnings`` (an earlier phase's, such as a missing benchmark source) go into the datasheet."""
    from raypipe.shards.phase import run_shard

    start = time.time()
    state.set_phase("shard", "running", started=start)
    docs = read_parts(store, CLEAN)
    keep = ["doc_id", "url", "text", "stream", "source", "license", "seed_similarity", "agent_score"]

    def stream(name: str, web: bool = True) -> Any:
        def wanted(row: dict[str, Any]) -> bool:
            return row["stream"] == name and (web or row["source"] != "web")

        return docs.filter(wanted, num_cpus=LIGHT_TASK_CPUS).select_columns(keep)

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
