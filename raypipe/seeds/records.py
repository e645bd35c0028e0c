"""The normalized seed record every loader yields, its stable id, and the load report.

Why one shape: the index, the classifier and the report must not care whether a seed came from a
Gorilla JSONL line, a ToolBench tree or an introspected module. Ids are derived from content, so
the same seed gets the same id on every run and every machine (determinism contract).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

SEED_COLUMNS = ["id", "kind", "text", "source", "license", "apis", "schema", "origin", "text_hash"]
SeedKind = Literal["api_doc", "trajectory"]
_WS = re.compile(r"\s+")


class SeedFormatError(ValueError):
    """A seed file or record is malformed; the message names the file, the line and what is wrong."""


class SeedSourceError(ValueError):
    """A seed source may not be read (a benchmark directory) or matched nothing."""


def normalize_text(text: str) -> str:
    """Unicode NFKC with runs of whitespace collapsed: what 'the same text' means for exact dedup."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text)).strip()


def text_hash(text: str) -> str:
    return hashlib.sha1(normalize_text(text).encode("utf-8")).hexdigest()


def make_seed(
    *,
    kind: SeedKind,
    text: str,
    source: str,
    schema: str,
    origin: str,
    apis: list[str] | None = None,
    license: str | None = None,
) -> dict[str, Any]:
    """One seed row; ``id`` is ``source:sha1(normalized text)[:16]`` so it survives reruns."""
    digest = text_hash(text)
    seen: set[str] = set()
    names = [a for a in (apis or []) if a and not (a in seen or seen.add(a))]
    return {
        "id": f"{source}:{digest[:16]}",
        "kind": kind,
        "text": text,
        "source": source,
        "license": license,
        "apis": names,
        "schema": schema,
        "origin": origin,
        "text_hash": digest,
    }


@dataclass
class SeedIssue:
    """A problem met while loading: where (file and line or record) and what."""

    file: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.file} {self.where}: {self.message}"


@dataclass
class LoadReport:
    """Everything a person needs to trust the seed table: counts, repairs, errors, skips, dedup."""

    files: int = 0
    records_by_schema: Counter = field(default_factory=Counter)
    seeds_by_source: Counter = field(default_factory=Counter)
    repairs: list[SeedIssue] = field(default_factory=list)
    errors: list[SeedIssue] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    duplicates_removed: int = 0
    harvest: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "records_by_schema": dict(sorted(self.records_by_schema.items())),
            "seeds_by_source": dict(sorted(self.seeds_by_source.items())),
            "repairs": [str(r) for r in self.repairs],
            "errors": [str(e) for e in self.errors],
            "skipped": dict(sorted(self.skipped.items())),
            "duplicates_removed": self.duplicates_removed,
            "harvest": self.harvest,
        }
