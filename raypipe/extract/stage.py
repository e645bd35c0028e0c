"""The extraction stage: one pandas batch of WARC rows in, one batch of documents out.

No row is ever removed here: a page that fails gets ``drop_reason`` and stays, so the funnel and
``candidates/`` account for every page. The raw HTML is not carried further (memory).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pyarrow as pa

from raypipe.config import ExtractConfig, QualityConfig
from raypipe.extract.html import ExtractTimeout, decode_html, extract_text, time_guard
from raypipe.extract.language import UNKNOWN, identify
from raypipe.extract.quality import quality_signals, quality_verdict

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
        ("quality_ok", pa.bool_()),
        ("drop_reason", pa.string()),
    ]
)
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


class ExtractStage:
    """Decode, extract main content, identify language and score quality for a batch of pages."""

    def __init__(self, extract: ExtractConfig, quality: QualityConfig):
        self.cfg = extract
        self.quality = quality
        self.languages = set(extract.languages)

    def _one(self, html: bytes, charset: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {"text": "", "title": "", "language": None, "language_score": None}
        start = time.perf_counter()
        try:
            with time_guard(self.cfg.timeout_s):
                decoded, encoding = decode_html(html, charset)
                text, title = extract_text(decoded, self.cfg.extractor)
        except ExtractTimeout:
            out["drop_reason"] = "extract_timeout"
            return out
        except Exception as e:  # noqa: BLE001 - one bad page must not fail the batch
            out["drop_reason"] = f"extract_error:{type(e).__name__}"
            return out
        out.update(text=text.strip(), title=title.strip(), encoding=encoding)
        out["extract_ms"] = (time.perf_counter() - start) * 1000
        if not out["text"]:
            out["drop_reason"] = "empty_text"
            return out
        lang = identify(
            out["text"],
            self.cfg.language_min_confidence,
            self.cfg.language_min_prose_words,
            self.cfg.language_code_heavy,
        )
        out["language"], out["language_score"] = lang.code, lang.score
        if self.languages and lang.code not in self.languages:
            if lang.code != UNKNOWN or not self.cfg.keep_unknown_language:
                out["drop_reason"] = "language"
        sig = quality_signals(out["text"], lang.code)
        out.update(sig)
        if "drop_reason" not in out:
            out["drop_reason"] = quality_verdict(sig, self.quality)
        return out

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = []
        for rec in batch.to_pylist():
            row = {c: rec[c] for c in PASS_COLUMNS}
            if rec["url"] is not None:  # file markers (url null) pass through untouched
                row.update(self._one(rec["html"], rec["charset"]))
                row["html_truncated"] = bool(rec["html_truncated"])
                row["doc_id"] = doc_id(rec["url"], rec["warc_record_id"], rec["source_file"], rec["record_index"])
                row["quality_ok"] = row.get("drop_reason") is None
            rows.append(row)
        return pa.Table.from_pylist(rows, schema=OUTPUT_SCHEMA)
