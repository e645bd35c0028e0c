"""``load_seeds``: read every configured seed source into one normalized, de-duplicated table.

Sources are URIs (local paths, directories, globs, ``s3://``) read through raypipe.store.storage.
Benchmark test sets must never leak into the seeds, so any path under a ``benchmarks`` directory
is refused outright, not filtered.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from urllib.parse import urlparse

import pandas as pd

from raypipe.config import SeedsConfig, StorageConfig
from raypipe.seeds.api_docs import Ctx
from raypipe.seeds.harvest import harvest_api_docs
from raypipe.seeds.records import SEED_COLUMNS, LoadReport, SeedFormatError, SeedIssue, SeedSourceError
from raypipe.seeds.schemas import detect, group_api_bank_turns, parse_records
from raypipe.store.storage import filesystem, read_bytes

log = logging.getLogger(__name__)
SEED_FILE = re.compile(r"\.(json|jsonl|ndjson)(\.gz)?$", re.I)
FORBIDDEN_DIR = "benchmarks"


def refuse_benchmarks(uri: str) -> None:
    """Raise if ``uri`` lies under a ``benchmarks`` directory (test sets are never seeds)."""
    parts = PurePosixPath(urlparse(uri).path if "://" in uri else uri).parts
    if any(p.lower() == FORBIDDEN_DIR for p in parts):
        raise SeedSourceError(f"refusing to read {uri} as seeds: it is under a '{FORBIDDEN_DIR}' directory")


def expand_seed_sources(sources: list[str], storage_cfg: StorageConfig) -> list[str]:
    """Seed file URIs for files, directories (searched recursively) and globs, sorted per source."""
    out: list[str] = []
    for src in sources:
        refuse_benchmarks(src)
        fs, path = filesystem(src, storage_cfg)
        prefix = "s3://" if src.startswith("s3://") else ""
        if any(ch in path for ch in "*?["):
            found = sorted(p for p in fs.glob(path) if not fs.isdir(p))
        elif fs.isdir(path):
            found = sorted(p for p in fs.find(path) if SEED_FILE.search(p) and "/." not in p)
        elif fs.exists(path):
            found = [path]
        else:
            raise SeedSourceError(f"seed source not found: {src}")
        if not found:
            raise SeedSourceError(f"seed source matched no .json/.jsonl files: {src}")
        for p in found:
            refuse_benchmarks(p)
            out.append(prefix + p)
    seen: set[str] = set()
    return [u for u in out if not (u in seen or seen.add(u))]


def _licenses(manifest: str | None, storage_cfg: StorageConfig) -> list[tuple[str, str]]:
    """``(file suffix, license)`` pairs from a JSONL manifest with ``file`` and ``license`` fields."""
    if not manifest:
        return []
    rows = []
    for i, line in enumerate(read_bytes(manifest, storage_cfg).decode().splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise SeedFormatError(f"{manifest} line {i}: invalid JSON ({e.msg})") from None
            if row.get("file") and row.get("license"):
                rows.append((str(row["file"]), str(row["license"])))
    return rows


def source_name(uri: str) -> str:
    """The dataset a seed file belongs to: its directory's name (``gorilla_apizoo``)."""
    path = PurePosixPath(urlparse(uri).path if "://" in uri else uri)
    return path.parent.name or re.sub(SEED_FILE, "", path.name)


def load_seed_file(
    uri: str, storage_cfg: StorageConfig, report: LoadReport, on_error: str, license: str | None = None
) -> list[dict]:
    """Every seed of one file; malformed records raise, or are collected in ``report.errors``."""
    refuse_benchmarks(uri)
    name = PurePosixPath(urlparse(uri).path if "://" in uri else uri).name
    records, repairs = parse_records(read_bytes(uri, storage_cfg), uri)
    report.files += 1
    report.repairs.extend(SeedIssue(uri, "", r) for r in repairs)
    seeds: list[dict] = []
    for where, rec in group_api_bank_turns(records):
        ctx = Ctx(source=source_name(uri), file=name, where=where, license=license)
        try:
            if not isinstance(rec, Mapping):
                raise ctx.error(f"record is a {type(rec).__name__}, expected a JSON object")
            schema = detect(rec)
            if schema is None:
                raise ctx.error(f"unrecognized seed schema (keys: {', '.join(sorted(map(str, rec))[:12])})")
            out = schema.load(rec, ctx)
        except SeedFormatError as e:
            if on_error == "raise":
                raise SeedFormatError(str(e).replace(name, uri, 1)) from None
            report.errors.append(SeedIssue(uri, where, str(e)))
            continue
        report.records_by_schema[schema.name] += 1
        if isinstance(out, str):
            report.skipped[out] += 1
            continue
        seeds.extend(out)
    return seeds


def dedup_seeds(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Exact dedup on the normalized-text hash; the first occurrence (source order) wins."""
    keep = ~df["text_hash"].duplicated(keep="first")
    return df[keep].reset_index(drop=True), int((~keep).sum())


def cap_per_source(df: pd.DataFrame, cap: int) -> pd.DataFrame:
    """At most ``cap`` seeds per source, chosen by text hash: the same sample on every run."""
    kept = df.sort_values(["source", "text_hash"]).groupby("source", sort=False).head(cap)
    return kept.sort_index().reset_index(drop=True)


def load_seeds(cfg: SeedsConfig, storage_cfg: StorageConfig) -> pd.DataFrame:
    """All seeds of the configured sources plus harvested module docs, exact-deduplicated.

    Columns: ``SEED_COLUMNS``. ``df.attrs["load_report"]`` holds the LoadReport as a dict
    (counts per schema and source, repairs, collected errors, skips, duplicates removed).
    """
    report = LoadReport()
    licenses = _licenses(cfg.license_manifest, storage_cfg)
    rows: list[dict] = []
    for uri in expand_seed_sources(cfg.sources, storage_cfg):
        lic = next((lic for suffix, lic in licenses if uri.endswith(suffix)), None)
        rows.extend(load_seed_file(uri, storage_cfg, report, cfg.on_error, lic))
    if cfg.harvest_modules:
        harvested, stats = harvest_api_docs(cfg)
        rows.extend(harvested)
        report.harvest = stats
    df = pd.DataFrame(rows, columns=SEED_COLUMNS)
    df, report.duplicates_removed = dedup_seeds(df)
    if cfg.max_per_source:
        df = cap_per_source(df, cfg.max_per_source)
    report.seeds_by_source.update(df["source"].value_counts().to_dict())
    for issue in report.repairs[:3]:
        log.info("seed repair: %s", issue)
    df.attrs["load_report"] = report.to_dict()
    return df
