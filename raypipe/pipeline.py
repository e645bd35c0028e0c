"""Phases composed into Ray Data plans; ``run`` executes them in order and writes ``stats.json``.

Phase 2 (extract) is one streaming plan: WARC read tasks -> extraction -> part writer. The writer
returns a tiny summary per written part; the driver consumes only those summaries to know when an
input file is fully written (its completion record is the resume unit) and to log progress.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raypipe.config import RunConfig, StorageConfig
from raypipe.extract import ExtractStage, extract_rules
from raypipe.extract.stage import load_filters
from raypipe.report import write_report
from raypipe.runtime import ensure_cwd, init_ray
from raypipe.select import Select
from raypipe.stage import LIGHT_TASK_CPUS, Resources, apply, cluster_cpus, sink
from raypipe.state import RunState, digest
from raypipe.storage import OutputStore, expand_inputs, redact, s3_endpoint
from raypipe.warc import file_stem, warc_dataset

log = logging.getLogger(__name__)
EXTRACTED = "extracted"
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


@dataclass
class FileProgress:
    rows: int = 0
    parts: list[str] = field(default_factory=list)
    drops: Counter = field(default_factory=Counter)
    languages: Counter = field(default_factory=Counter)
    stats: dict[str, Any] | None = None

    def complete(self) -> bool:
        return self.stats is not None and self.rows >= self.stats["html_responses"]


class InputsFailed(RuntimeError):
    """Input files that could not be read after every retry (and one more pass at the end of the
    extract phase): the run wrote what it could, but its output is incomplete; a rerun reads them."""

    def __init__(self, failed: list[dict[str, str]]):
        self.failed = failed
        super().__init__(f"{len(failed)} input files could not be read: " + ", ".join(f["uri"] for f in failed))


class ExtractTracker:
    """Driver-side bookkeeping from the writer's summaries: completion records and progress lines.

    ``settings`` (a hash of the extract phase's settings) is kept in every completion record, so a
    file extracted under other settings is not taken as done. A file whose read failed is recorded
    as failed (``failed``: URI -> error), its partial parts deleted, and never marked done.
    """

    def __init__(
        self,
        state: RunState,
        total_files: int,
        already_done: int,
        log_every_s: float = 10.0,
        settings: str | None = None,
    ):
        self.state = state
        self.settings = settings
        self.failed: dict[str, str] = {}
        self.files: dict[str, FileProgress] = defaultdict(FileProgress)
        self.total = total_files
        self.done = already_done
        self.docs = 0
        self.start = time.monotonic()
        self.started_at = time.time()  # wall clock for the run state: `raypipe status` reads it elsewhere
        self.last_log = self.start
        self.log_every_s = log_every_s

    def update(self, row: dict[str, Any]) -> None:
        prog = self.files[row["source_file"]]
        prog.rows += int(row["rows"])
        self.docs += int(row["rows"])
        if row.get("part"):
            prog.parts.append(row["part"])
            prog.drops.update(json.loads(row["drops"]))
            prog.languages.update(json.loads(row["languages"]))
        if row.get("file_stats"):
            prog.stats = json.loads(row["file_stats"])
        if prog.complete():
            self._finish(row["source_file"], prog)
        self._maybe_log()

    def _finish(self, uri: str, prog: FileProgress) -> None:
        if prog.stats.get("failed"):
            self._fail(uri, prog)
            return
        record = {
            "uri": redact(uri),
            "records": prog.stats["records"],
            "html_responses": prog.stats["html_responses"],
            "skipped": prog.stats["skipped"],
            "damage": prog.stats.get("damage", {}),
            "errors": prog.stats["errors"],
            "documents": prog.rows,
            "drops": dict(prog.drops),
            "languages": dict(prog.languages),
            "parts": sorted(prog.parts),
            "settings": self.settings,
        }
        self.state.mark_unit("extract", file_stem(uri), record)
        del self.files[uri]
        self.done += 1
        self._record_progress()

    def _fail(self, uri: str, prog: FileProgress) -> None:
        """The read stopped early: what was written of the file is deleted (a rerun redoes it whole)."""
        error = prog.stats["failed"]
        self.state.store.delete(f"{EXTRACTED}/{file_stem(uri)}")
        self.state.mark_failed("extract", file_stem(uri), {"uri": redact(uri), "error": error, "at": time.time()})
        log.warning("extract: %s could not be read: %s", redact(uri), error)
        self.failed[uri] = error
        self.docs -= prog.rows
        del self.files[uri]
        self._record_progress()

    def _record_progress(self) -> None:
        self.state.set_phase(
            "extract",
            "running",
            files_done=self.done,
            files_total=self.total,
            files_failed=len(self.failed),
            started=self.started_at,
            docs=self.docs,
        )

    def _maybe_log(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_log < self.log_every_s:
            return
        self.last_log = now
        elapsed = max(now - self.start, 1e-6)
        rate = self.docs / elapsed
        remaining = self.total - self.done
        files_rate = self.done / elapsed if self.done else 0.0
        eta = f"{remaining / files_rate:.0f}s" if files_rate else "?"
        log.info("extract: %d/%d files done, %d docs, %.1f docs/s, ETA %s", self.done, self.total, self.docs, rate, eta)


def funnel_from_units(units: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The extraction funnel (documents in/out of every stage) summed over completed files."""
    records = sum(u["records"] for u in units.values())
    html = sum(u["html_responses"] for u in units.values())
    skipped: Counter = Counter()
    damage: Counter = Counter()
    drops: Counter = Counter()
    languages: Counter = Counter()
    for u in units.values():
        skipped.update(u["skipped"])
        damage.update(u.get("damage", {}))
        drops.update(u["drops"])
        languages.update(u["languages"])
    extract_fail = sum(v for k, v in drops.items() if k.startswith("extract_") or k == "empty_text")
    extracted = html - extract_fail
    lang_kept = extracted - drops.get("language", 0)
    quality_kept = drops.get("kept", 0)
    return {
        "files": len(units),
        "funnel": [
            {"stage": "records_read", "documents": records},
            {"stage": "html_responses", "documents": html},
            {"stage": "extracted", "documents": extracted},
            {"stage": "language_kept", "documents": lang_kept},
            {"stage": "quality_kept", "documents": quality_kept},
        ],
        "record_skips": dict(sorted(skipped.items())),
        "damage": dict(sorted(damage.items())),
        "drop_reasons": dict(sorted((k, v) for k, v in drops.items() if k != "kept")),
        "languages": dict(languages.most_common(20)),
        "errors": [e for u in units.values() for e in u["errors"]][:50],
    }


def _extract_files(todo: list[str], cfg: RunConfig, store: OutputStore, tracker: ExtractTracker) -> None:
    """One streaming plan over ``todo``: read, extract, write parts; the tracker records each file."""
    for uri in todo:  # partial output of an interrupted file is redone from scratch
        store.delete(f"{EXTRACTED}/{file_stem(uri)}")
    ds = warc_dataset(todo, cfg.storage, cfg.extract, cfg.limit_records)
    extract = ExtractStage(cfg.extract)
    ds = apply(ds, extract)
    for page_filter in load_filters(cfg.extract):
        ds = apply(ds, page_filter)
    ds = apply(ds, Select(extract_rules(cfg.extract, cfg.quality), None, extract.batch_size, extract.resources))
    ds = sink(ds, PartWriter, cfg.output, cfg.storage, EXTRACTED, resources=_writer_resources())
    for batch in ds.iter_batches(batch_format="pandas", batch_size=None):
        for row in batch.to_dict("records"):
            tracker.update(row)
    tracker._maybe_log(force=True)
    if tracker.files:
        missing = sorted(file_stem(u) for u in tracker.files)
        raise RuntimeError(f"extract: files not fully written: {missing}")


def run_extract(cfg: RunConfig, store: OutputStore, state: RunState) -> dict[str, Any]:
    """Phase 2: stream every pending WARC file to ``extracted/``; returns the extraction funnel.

    A file is pending unless it was extracted under the same extract settings. Files whose read
    failed after every retry are read once more at the end; those that fail again are listed in
    the summary's ``failed_inputs`` and the phase is recorded as failed, not done.
    """
    uris = expand_inputs(cfg.input, cfg.storage, cfg.limit_files)
    stems = {file_stem(u) for u in uris}
    settings = digest(cfg.phase_settings("extract"))
    units = state.units("extract")
    done = {k for k, u in units.items() if u.get("settings") == settings}
    redo = sorted(k for k in units if k in stems and k not in done)
    if redo:
        log.warning("extract: %d files were extracted under other extract settings; extracting them again", len(redo))
    dropped = sorted(k for k in units if k not in stems)
    if dropped:  # the later phases read every part under extracted/: only this input list's may be there
        log.warning("extract: %d files are no longer in the input list; removing their pages", len(dropped))
        for stem in dropped:
            store.delete(f"{EXTRACTED}/{stem}")
            store.delete(state.unit_key("extract", stem))
    todo = [u for u in uris if file_stem(u) not in done]
    log.info("extract: %d input files, %d already done, %d to read", len(uris), len(uris) - len(todo), len(todo))
    start = time.time()
    state.set_phase("extract", "running", files_done=len(uris) - len(todo), files_total=len(uris), started=start)
    tracker = ExtractTracker(state, len(uris), len(uris) - len(todo), settings=settings)
    if todo:
        _extract_files(todo, cfg, store, tracker)
    if tracker.failed:
        retry = sorted(tracker.failed)
        log.warning("extract: %d files could not be read; reading them once more: %s", len(retry), redact(str(retry)))
        tracker.failed.clear()
        _extract_files(retry, cfg, store, tracker)
    units = {k: v for k, v in state.units("extract").items() if k in stems and v.get("settings") == settings}
    summary = funnel_from_units(units)
    summary["seconds"] = round(time.time() - start, 2)
    failed = [{"uri": redact(u), "error": e} for u, e in sorted(tracker.failed.items())]
    if failed:
        summary["failed_inputs"] = failed
    state.set_phase(
        "extract",
        "failed" if failed else "done",
        files_done=len(units),
        files_total=len(uris),
        files_failed=len(failed),
        started=start,
        inputs=digest(sorted(stems)),
    )
    return summary


def _writer_resources() -> Resources:
    """Writers are IO-bound: quarter-CPU actors, at most one per CPU of the cluster."""
    return Resources(cpus=LIGHT_TASK_CPUS, actors=max(1, int(cluster_cpus())))


def _resolve_endpoint(cfg: RunConfig) -> RunConfig:
    """Pin the S3 endpoint into the config shipped to workers (it is not a secret; credentials stay
    in the environment), so remote workers reach the same store as the driver."""
    endpoint = s3_endpoint(cfg.storage)
    if endpoint and not cfg.storage.endpoint_url:
        cfg = cfg.model_copy(deep=True)
        cfg.storage.endpoint_url = endpoint
    return cfg


def run_seeds(cfg: RunConfig, store: OutputStore, state: RunState) -> dict[str, Any]:
    """Phase 1: seed corpus (files, harvested modules, crawled doc sites) -> FAISS seed index.

    Skipped on a rerun once its completion record exists: the index is the unit.
    """
    done = state.finished("seeds")
    if done:
        log.info("seeds: index already built (%d seeds), skipping", done["seeds"])
        return done
    import pandas as pd

    from raypipe.retrieve.index import build_seed_index_on_cluster
    from raypipe.seeds import load_seeds

    start = time.time()
    state.set_phase("seeds", "running", started=start)
    seeds = load_seeds(cfg.seeds, cfg.storage)
    report = seeds.attrs.get("load_report", {})
    crawl_stats = None
    if cfg.crawl.start_urls or cfg.crawl.start_urls_uri:
        from raypipe.crawl import crawl_warcs_to_seed_records
        from raypipe.crawl import run_crawl as crawl_docs

        crawl_stats = crawl_docs(cfg, store)
        crawled = crawl_warcs_to_seed_records(crawl_stats["warc_files"], cfg)
        seeds = pd.concat([seeds, crawled.reindex(columns=seeds.columns)], ignore_index=True)
        seeds = seeds.drop_duplicates(subset=["id"], keep="first").reset_index(drop=True)
        seeds.attrs["load_report"] = report
    log.info("seeds: %d seed records (%s)", len(seeds), seeds["kind"].value_counts().to_dict())
    meta = build_seed_index_on_cluster(seeds, cfg.retrieve, cfg.output, cfg.storage)
    summary = {
        "seeds": len(seeds),
        "by_kind": seeds["kind"].value_counts().sort_index().to_dict(),
        "by_source": seeds["source"].value_counts().sort_index().to_dict(),
        "duplicates_removed": report.get("duplicates_removed", 0),
        "distinct_apis": int(seeds["apis"].explode().dropna().nunique()) if "apis" in seeds else 0,
        "harvest": report.get("harvest"),
        "index": {k: meta[k] for k in ("model", "index_type", "n_vectors", "dim")},
        "docs_crawl": crawl_stats and {k: v for k, v in crawl_stats.items() if k != "warc_files"},
        "seconds": round(time.time() - start, 2),
    }
    state.set_phase("seeds", "done", started=start, seeds=len(seeds), summary=summary)
    return summary


def full_funnel(stats: dict[str, Any]) -> list[dict[str, Any]]:
    """Documents in/out of every stage, from the WARC records to the shards."""
    funnel = list(stats["extract"]["funnel"]) if "extract" in stats else []
    score, clean = stats.get("score"), stats.get("clean")
    if score:
        funnel.append({"stage": "agent_selected", "documents": score["selected"]})
    if clean and "funnel" in clean:
        funnel.extend(clean["funnel"])
    if stats.get("mix"):
        funnel.append({"stage": "in_shards", "documents": stats["mix"]["documents"]})
    return funnel


def run(cfg: RunConfig) -> dict[str, Any]:
    """Run every phase for ``cfg``, then ``stats.json`` and ``report.html``; ``manifest.json`` (the
    commit marker) is written last by the shard phase. Returns the stats."""
    from raypipe.phases import run_clean_phase, run_score, run_shard_phase

    cfg = _resolve_endpoint(cfg)
    init_ray(cfg)
    store = OutputStore(cfg.output, cfg.storage)
    state = RunState(store)
    timings: dict[str, float] = {}
    stats: dict[str, Any] = {"output": cfg.output, "config_hash": cfg.config_hash(), "timings": timings}
    phases = {"seeds": run_seeds, "extract": run_extract, "score": run_score, "clean": run_clean_phase}
    failed: list[dict[str, str]] = []
    # The clean phase cleans the code and text datasets too, and the shard phase ships them: both
    # read "@site-packages" as the dataset written under the output prefix.
    datasets_cfg = _resolve_code_stream(cfg, store) if {"clean", "shard"} & set(cfg.phases) else cfg
    for name, phase in phases.items():
        if name in cfg.phases:
            ensure_cwd()
            began = time.monotonic()
            provenance = _check_phase(name, cfg, state)
            stats[name] = phase(datasets_cfg if name == "clean" else cfg, store, state)
            timings[name] = round(time.monotonic() - began, 2)
            failed = stats[name].get("failed_inputs") or []
            if failed:
                break  # later phases would build a corpus without these files
            _stamp_phase(name, provenance, state)
    if "score" in stats:
        stats["scores"] = stats["score"]["histograms"]
        stats["top_domains"] = [{"domain": d, "documents": n} for d, n in stats["score"]["top_domains"].items()]
    warnings = [w for name in phases if isinstance(stats.get(name), dict) for w in stats[name].get("warnings") or []]
    if "shard" in cfg.phases and not failed:
        ensure_cwd()
        began = time.monotonic()
        provenance = _check_phase("shard", cfg, state)
        manifest = run_shard_phase(datasets_cfg, store, state, full_funnel(stats), warnings)
        _stamp_phase("shard", provenance, state)
        timings["shard"] = round(time.monotonic() - began, 2)
        stats["mix"] = {**manifest["totals"], **manifest["mix"], "tokenizer": manifest["tokenizer"]}
    stats["funnel"] = full_funnel(stats)
    stats["warnings"] = warnings
    if failed:
        stats["failed_inputs"] = failed
    store.write_text("stats.json", json.dumps(stats, indent=2, sort_keys=True, default=str))
    write_report(stats, store)
    for warning in warnings:
        log.error("%s", warning)
    if failed:
        log.error(
            "run incomplete: %d input files could not be read after retries (stats.json failed_inputs):", len(failed)
        )
        for item in failed:
            log.error("failed input: %s: %s", item["uri"], item["error"])
        log.error("rerun the same config to read them again; finished files are kept")
        raise InputsFailed(failed)
    return stats


def _resolve_code_stream(cfg: RunConfig, store: OutputStore) -> RunConfig:
    """``mix.code.uri: "@site-packages"``: the installed packages' sources, written once under the
    output prefix (``raypipe.defaults``) so the workers read them like any configured dataset."""
    from raypipe.defaults import SITE_PACKAGES, materialize_site_packages

    code = cfg.mix.code
    if code is None or code.uri != SITE_PACKAGES:
        return cfg
    resolved = code.model_copy(
        update={"uri": materialize_site_packages(store), "id_field": "id", "name": code.name or "site_packages"}
    )
    return cfg.model_copy(update={"mix": cfg.mix.model_copy(update={"code": resolved})})


@dataclass
class _Provenance:
    settings: dict[str, Any]
    reason: str | None
    previous: dict[str, Any] | None


def _check_phase(name: str, cfg: RunConfig, state: RunState) -> _Provenance:
    """Before a phase: if its done record was made under other settings or inputs, say which key
    changed and mark it stale, so the phase (and, through the fingerprints, every later one) reruns."""
    settings = cfg.phase_settings(name)
    previous = state.phase(name)
    reason = state.stale_reason(name, settings)
    if reason:
        log.warning("%s: rerunning: %s", name, reason)
        state.invalidate(name, reason)
    return _Provenance(settings, reason, previous)


def _stamp_phase(name: str, p: _Provenance, state: RunState) -> None:
    """After a phase: record what produced its output (a skipped, current phase keeps its record)."""
    record = state.phase(name) or {}
    previous = p.previous or {}
    if record.get("fingerprint") and record.get("fingerprint") == previous.get("fingerprint"):
        return
    if p.reason is None and previous.get("status") == "done" and previous.get("inputs") != record.get("inputs"):
        p.reason = f"input files changed ({previous.get('files_total')} -> {record.get('files_total')} files)"
        log.warning("%s: %s", name, p.reason)
    state.stamp(name, p.settings, p.reason)
