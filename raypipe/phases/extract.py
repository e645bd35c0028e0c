"""Phase 2, extract: one streaming plan per pass over the pending WARC files: read tasks ->
extraction and filters (stages that tag) -> one ``Select`` -> part writer.

The writer returns a tiny summary per written part; the driver consumes only those summaries to
know when an input file is fully written (its completion record is the resume unit) and to log
progress.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from raypipe.config import RunConfig
from raypipe.extract import ExtractStage, extract_rules
from raypipe.extract.stage import load_filters
from raypipe.select import Select
from raypipe.stage import LIGHT_TASK_CPUS, Resources, apply, pool_size, sink
from raypipe.store.parts import EXTRACTED, PartWriter
from raypipe.store.state import RunState, digest
from raypipe.store.storage import OutputStore, expand_inputs, redact
from raypipe.store.warc import file_stem, warc_dataset

log = logging.getLogger(__name__)


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

    Records go to the phase's journal in batches (``record_every`` files or ``record_every_s``
    seconds, see :class:`raypipe.store.state.UnitJournal`), and the phase's progress record with
    them: one write per batch, not per file. :meth:`flush` writes what is waiting.
    """

    def __init__(
        self,
        state: RunState,
        total_files: int,
        already_done: int,
        log_every_s: float = 10.0,
        settings: str | None = None,
        record_every: int = 500,
        record_every_s: float = 30.0,
    ):
        self.state = state
        self.journal = state.journal("extract", record_every, record_every_s)
        self.settings = settings
        self.failed: dict[str, str] = {}
        self.files: dict[str, FileProgress] = defaultdict(FileProgress)
        self.total = total_files
        self.done = already_done
        self.docs = 0
        self.done_docs = 0  # documents of the files recorded done: what the progress record shows
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
        del self.files[uri]
        self.done += 1
        self.done_docs += prog.rows
        if self.journal.done(file_stem(uri), record):
            self._record_progress()

    def _fail(self, uri: str, prog: FileProgress) -> None:
        """The read stopped early: the parts written of the file are deleted (a rerun redoes it whole)."""
        error = prog.stats["failed"]
        if prog.parts:
            self.state.store.delete_keys(prog.parts)
        log.warning("extract: %s could not be read: %s", redact(uri), error)
        self.failed[uri] = error
        self.docs -= prog.rows
        del self.files[uri]
        if self.journal.failed(file_stem(uri), {"uri": redact(uri), "error": error, "at": time.time()}):
            self._record_progress()

    def flush(self) -> None:
        """Write the waiting completion records, then the progress record that counts them."""
        self.journal.flush()
        self._record_progress()

    def _record_progress(self) -> None:
        self.state.set_phase(
            "extract",
            "running",
            files_done=self.done,
            files_total=self.total,
            files_failed=len(self.failed),
            started=self.started_at,
            docs=self.done_docs,
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


def clear_partial(store: OutputStore, stems: set[str]) -> int:
    """Delete what earlier runs wrote under ``extracted/`` for these files; returns objects deleted.

    One listing of ``extracted/`` and batched deletes (1,000 keys a call), not a call per file:
    at dump scale the files to redo are tens of thousands, and few of them have anything written.
    """
    if not stems:
        return 0
    keys = [k for k in store.list(EXTRACTED) if k.split("/")[1] in stems]
    store.delete_keys(keys)
    return len(keys)


def extract_dataset(todo: list[str], cfg: RunConfig) -> Any:
    """The streaming plan over ``todo``: read, extract, select, write parts; one summary row per part.

    The read task of a file runs extraction and the verdict in the same task (Ray Data fuses
    them: tasks of one CPU, and extraction asks no batch size of its own, see ``ExtractStage``),
    and that task's output is cut into blocks of at most ``extract.part_mb``; the writer writes
    each block as one part. A file's pages are therefore one part unless they exceed that size,
    never one per read batch, and no block mixes two files.
    """
    from ray.data import DataContext

    ctx = DataContext.get_current()
    block_size = ctx.target_max_block_size
    ctx.target_max_block_size = cfg.extract.part_mb << 20  # the plan keeps a copy of the context
    try:
        ds = warc_dataset(todo, cfg.storage, cfg.extract, cfg.limit_records)
        extract = ExtractStage(cfg.extract)
        ds = apply(ds, extract)
        for page_filter in load_filters(cfg.extract):
            ds = apply(ds, page_filter)
        ds = apply(ds, Select(extract_rules(cfg.extract, cfg.quality), None, extract.batch_size, extract.resources))
        return sink(ds, PartWriter, cfg.output, cfg.storage, EXTRACTED, resources=_writer_resources(cfg))
    finally:
        ctx.target_max_block_size = block_size


def _extract_files(todo: list[str], cfg: RunConfig, store: OutputStore, tracker: ExtractTracker) -> None:
    """One streaming plan over ``todo`` (``extract_dataset``); the tracker records each file."""
    ds = extract_dataset(todo, cfg)
    try:
        for batch in ds.iter_batches(batch_format="pandas", batch_size=None):
            for row in batch.to_dict("records"):
                tracker.update(row)
    finally:  # what is durably written stays recorded, even when the plan fails
        tracker.flush()
    tracker._maybe_log(force=True)
    if tracker.files:
        missing = sorted(file_stem(u) for u in tracker.files)
        raise RuntimeError(f"extract: files not fully written: {missing}")


def run(cfg: RunConfig, store: OutputStore, state: RunState) -> dict[str, Any]:
    """Phase 2: stream every pending WARC file to ``extracted/``; returns the extraction funnel.

    A file is pending unless it was extracted under the same extract settings. Files whose read
    failed after every retry are read once more at the end; those that fail again are listed in
    the summary's ``failed_inputs`` and the phase is recorded as failed, not done.
    """
    uris = expand_inputs(cfg.input, cfg.storage, cfg.limit_files)
    stems = {file_stem(u) for u in uris}
    settings = digest(cfg.phase_settings("extract"))
    state.compact("extract", min_objects=64)  # after many interrupted runs: read one object, not hundreds
    units = state.units("extract")
    done = {k for k, u in units.items() if u.get("settings") == settings}
    redo = sorted(k for k in units if k in stems and k not in done)
    if redo:
        log.warning("extract: %d files were extracted under other extract settings; extracting them again", len(redo))
    todo = [u for u in uris if file_stem(u) not in done]
    log.info("extract: %d input files, %d already done, %d to read", len(uris), len(uris) - len(todo), len(todo))
    start = time.time()
    state.set_phase("extract", "running", files_done=len(uris) - len(todo), files_total=len(uris), started=start)
    tracker = ExtractTracker(
        state,
        len(uris),
        len(uris) - len(todo),
        settings=settings,
        record_every=cfg.extract.record_every_files,
        record_every_s=cfg.extract.record_every_s,
    )
    dropped = sorted(k for k in units if k not in stems)
    if dropped:  # the later phases read every part under extracted/: only this input list's may be there
        log.warning("extract: %d files are no longer in the input list; removing their pages", len(dropped))
        for stem in dropped:
            tracker.journal.removed(stem)
        tracker.journal.flush()
    # Partial output of an interrupted file is redone from scratch; a dropped file's output goes.
    cleared = clear_partial(store, {file_stem(u) for u in todo} | set(dropped))
    if cleared:
        log.info("extract: deleted %d parts of files not recorded done (an interrupted run's)", cleared)
    if todo:
        _extract_files(todo, cfg, store, tracker)
    if tracker.failed:
        retry = sorted(tracker.failed)
        log.warning("extract: %d files could not be read; reading them once more: %s", len(retry), redact(str(retry)))
        tracker.failed.clear()
        _extract_files(retry, cfg, store, tracker)
    state.compact("extract")
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


def _writer_resources(cfg: RunConfig) -> Resources:
    """Writers are IO-bound: quarter-CPU actors, a pool of one that grows up to
    ``extract.max_writers`` (at most one per CPU the cluster can have, ``ray.max_cpus``: not the
    CPUs it has when the plan is built, as an autoscaling cluster starts with no workers)."""
    return Resources(cpus=LIGHT_TASK_CPUS, actors=pool_size(cfg.extract.max_writers))
