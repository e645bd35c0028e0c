"""The extraction stage: one pandas batch of WARC rows in, one batch of documents out.

No row is ever removed here: a page that fails gets ``drop_reason`` and stays, so the funnel and
``candidates/`` account for every page. The raw HTML is not carried further (memory).
"""

from __future__ import annotations

import hashlib
import importlib
import time
from typing import Any

import pyarrow as pa

from raypipe.config import ExtractConfig, QualityConfig
from raypipe.extract.html import ExtractTimeout, decode_html, extract_text, time_guard
from raypipe.extract.language import identify
from raypipe.extract.quality import quality_signals
from raypipe.select import Language, Quality, Rule, Select, TagReason
from raypipe.stage import Resources, Stage

OUTPUT_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("url", pa.string()),
        ("warc_record_id", pa.string()),
        ("warc_date", pa.string()),
        ("http_status", pa.int32()),
        ("source_file", pa.string()),
        ("record_index", pa.int64()),
        ("file_stats", pa.string()),
        ("html_truncated", pa.bool_()),
        ("title", pa.string()),
        ("text", pa.string()),
        ("encoding", pa.string()),
        ("language", pa.string()),
        ("language_score", pa.float32()),
        ("extract_ms", pa.float32()),
        ("n_words", pa.int32()),
        ("mean_word_length", pa.float32()),
        ("symbol_word_ratio", pa.float32()),
        ("bullet_lines_ratio", pa.float32()),
        ("ellipsis_lines_ratio", pa.float32()),
        ("dup_line_fraction", pa.float32()),
        ("dup_paragraph_fraction", pa.float32()),
        ("alpha_word_fraction", pa.float32()),
        ("stop_words", pa.int32()),
        ("extract_error", pa.string()),
    ]
)
SIGNALS = [
    "n_words", "mean_word_length", "symbol_word_ratio", "bullet_lines_ratio", "ellipsis_lines_ratio",
    "dup_line_fraction", "dup_paragraph_fraction", "alpha_word_fraction", "stop_words",
]  # fmt: skip
EXTRACT_TAGS = pa.schema([OUTPUT_SCHEMA.field(n) for n in ["extract_error", "language", "language_score", *SIGNALS]])
"""The extraction's tags that its drop rules read: carried through every phase into ``candidates/``
so that a selection can be re-made from there."""
PASS_COLUMNS = ["url", "warc_record_id", "warc_date", "http_status", "source_file", "record_index", "file_stats"]


def doc_id(url: str | None, record_id: str | None, source_file: str, index: int) -> str:
    """A stable key for a page: identical across reruns, unique within a crawl.

    The input file's name and the record's position are part of it: the same record copied into
    two files (a re-packed WARC, a file listed twice under two names) or twice into one must stay
    two documents, which exact dedup then resolves, instead of one key whose labels the clean
    phase would give to every copy. The name, not the full URI, so that moving the inputs to
    another bucket keeps every id.
    """
    name = source_file.rstrip("/").rsplit("/", 1)[-1]
    basis = f"{record_id or ''}#{index}"
    return hashlib.sha1(f"{url}\x00{basis}\x00{name}".encode()).hexdigest()


class ExtractStage(Stage):
    """Decode, extract main content, identify language and measure quality signals for a batch of
    pages: tags only (``extract_error``, ``language``, the signals); :func:`extract_rules` under
    :class:`raypipe.select.Select` decides.

    Replaces the WARC columns by the document columns (the raw HTML is not carried further).
    A task of one whole CPU: extraction is CPU-bound and has no state to load.
    """

    needs = ("url", "html", "charset", "html_truncated", "warc_record_id", *PASS_COLUMNS)
    adds = OUTPUT_SCHEMA

    def __init__(self, extract: ExtractConfig):
        self.cfg = extract
        self.resources = Resources(cpus=1.0)
        # One read batch at a time (``extract.batch_size`` pages, cut by the reader): a batch size
        # here would keep Ray Data from fusing extraction into the file's read task, and blocks
        # mixing several files' pages would reach the writer (one part per block and file).
        self.batch_size = None

    def _one(self, html: bytes, charset: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {"text": "", "title": "", "language": None, "language_score": None}
        start = time.perf_counter()
        try:
            with time_guard(self.cfg.timeout_s):
                decoded, encoding = decode_html(html, charset)
                text, title = extract_text(decoded, self.cfg.extractor)
        except ExtractTimeout:
            out["extract_error"] = "extract_timeout"
            return out
        except Exception as e:  # noqa: BLE001 - one bad page must not fail the batch
            out["extract_error"] = f"extract_error:{type(e).__name__}"
            return out
        out.update(text=text.strip(), title=title.strip(), encoding=encoding)
        out["extract_ms"] = (time.perf_counter() - start) * 1000
        if not out["text"]:
            out["extract_error"] = "empty_text"
            return out
        lang = identify(
            out["text"],
            self.cfg.language_min_confidence,
            self.cfg.language_min_prose_words,
            self.cfg.language_code_heavy,
        )
        out["language"], out["language_score"] = lang.code, lang.score
        out.update(quality_signals(out["text"], lang.code))
        return out

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = []
        for rec in batch.to_pylist():
            row = {c: rec[c] for c in PASS_COLUMNS}
            if rec["url"] is not None:  # file markers (url null) pass through untouched
                row.update(self._one(rec["html"], rec["charset"]))
                row["html_truncated"] = bool(rec["html_truncated"])
                row["doc_id"] = doc_id(rec["url"], rec["warc_record_id"], rec["source_file"], rec["record_index"])
            rows.append(row)
        return pa.Table.from_pylist(rows, schema=OUTPUT_SCHEMA)


def load_filters(extract: ExtractConfig) -> list[Stage]:
    """The configured page filters (``extract.filters``): tagging stages that each have a ``rule()``."""
    filters = []
    for spec in extract.filters:
        module, _, name = spec.path.partition(":")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"extract.filters: cannot load {spec.path!r} ({e})") from e
        stage = cls(**spec.options)
        if not isinstance(stage, Stage) or not callable(getattr(stage, "rule", None)):
            raise ValueError(f"extract.filters: {spec.path} must be a raypipe.stage.Stage with a rule() method")
        filters.append(stage)
    return filters


def extract_rules(extract: ExtractConfig, quality: QualityConfig) -> list[Rule]:
    """The extraction phase's drop rules, in order: failed extraction, language, quality, then each
    configured filter's rule."""
    rules: list[Rule] = [TagReason("extract_error"), Language(tuple(extract.languages), extract.keep_unknown_language)]
    return [*rules, Quality(quality), *(f.rule() for f in load_filters(extract))]


def extract_and_select(batch: pa.Table, extract: ExtractConfig, quality: QualityConfig) -> pa.Table:
    """One batch through extraction, the configured filters and their verdict, in process."""
    tagged = ExtractStage(extract).run(batch)
    for stage in load_filters(extract):
        stage.setup()
        tagged = stage.run(tagged)
    return Select(extract_rules(extract, quality)).run(tagged)
