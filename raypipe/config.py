"""Typed run configuration: one pydantic model, loaded from YAML, overridable with ``--set``.

Every knob has a default and a one-line description (``Field(description=...)``); unknown keys
are errors that name the offending key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message says which key and why."""


class Section(BaseModel):
    """Base for every config section: unknown keys are rejected, values validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StorageConfig(Section):
    endpoint_url: str | None = Field(
        None, description="S3 endpoint override; defaults to $AWS_ENDPOINT_URL, then AWS itself."
    )
    region: str | None = Field(None, description="S3 region; defaults to $AWS_REGION or us-east-1.")
    anonymous: bool = Field(False, description="Unsigned S3 requests, for truly public buckets only.")
    retries: int = Field(8, ge=0, description="Retries for one request on 5xx, SlowDown and resets.")
    backoff_base_s: float = Field(0.5, gt=0, description="First retry delay; doubles each retry, with jitter.")
    backoff_max_s: float = Field(20.0, gt=0, description="Upper bound for one retry delay.")
    commoncrawl_https: str = Field(
        "https://data.commoncrawl.org",
        description="Where Common Crawl keys are fetched over HTTPS when no AWS credentials exist.",
    )


class ExtractConfig(Section):
    extractor: Literal["resiliparse", "trafilatura"] = Field(
        "resiliparse", description="Main-content extractor: resiliparse (fast) or trafilatura."
    )
    max_html_bytes: int = Field(
        2_000_000, gt=0, description="HTML payloads are truncated to this many bytes before parsing."
    )
    max_record_bytes: int = Field(
        50_000_000, gt=0, description="Records larger than this are skipped unread (counted as too_large)."
    )
    timeout_s: float = Field(5.0, gt=0, description="Per-document extraction time guard.")
    languages: list[str] = Field(["en"], description="Languages kept; empty list keeps every language.")
    min_language_score: float = Field(
        0.0, description="Minimum language-id confidence (resiliparse score is lower-is-better: max rank)."
    )
    batch_size: int = Field(64, gt=0, description="Documents per extraction batch.")


class QualityConfig(Section):
    """Gopher-style heuristics (Rae et al. 2021); thresholds follow the paper unless noted."""

    min_words: int = Field(50, ge=0, description="Fewer words than this: dropped (too_short).")
    max_words: int = Field(100_000, gt=0, description="More words than this: dropped (too_long).")
    min_mean_word_length: float = Field(3.0, description="Mean word length below this: dropped.")
    max_mean_word_length: float = Field(10.0, description="Mean word length above this: dropped.")
    max_symbol_word_ratio: float = Field(0.1, description="Max ratio of '#' and '...' symbols to words.")
    max_bullet_lines_ratio: float = Field(0.9, description="Max fraction of lines starting with a bullet.")
    max_ellipsis_lines_ratio: float = Field(0.3, description="Max fraction of lines ending with an ellipsis.")
    max_duplicate_line_fraction: float = Field(0.3, description="Max fraction of lines that are repeats.")
    max_duplicate_paragraph_fraction: float = Field(0.3, description="Max fraction of repeated paragraphs.")
    min_alpha_word_fraction: float = Field(0.8, description="Min fraction of words with a letter in them.")
    min_stop_words: int = Field(2, ge=0, description="English only: at least this many stop words.")


class RayConfig(Section):
    address: str | None = Field(
        None, description="Ray address; None joins the submitted-to cluster or starts a local one."
    )
    num_cpus: int | None = Field(None, description="CPUs for a locally started Ray (None = all).")
    read_parallelism: int | None = Field(
        None, description="Concurrent WARC read tasks; None sizes from the cluster's CPUs."
    )
    progress_bars: bool | None = Field(
        None, description="Ray Data progress bars; None = only when stdout is a terminal."
    )


class DedupConfig(Section):
    """Exact and MinHash-LSH near-duplicate removal (phase 3); see raypipe/dedup/."""

    exact: bool = Field(True, description="Drop exact duplicates of the normalized text (duplicate_exact).")
    near: bool = Field(True, description="Drop MinHash-LSH near duplicates (duplicate_near).")
    shingle_words: int = Field(5, ge=1, description="Words per shingle (word n-grams) for MinHash.")
    num_perm: int = Field(128, ge=8, description="MinHash permutations per document.")
    bands: int = Field(16, ge=1, description="LSH bands; bands x rows must not exceed num_perm.")
    rows: int = Field(8, ge=1, description="MinHash values per LSH band.")
    threshold: float = Field(
        0.8, gt=0, le=1, description="Jaccard similarity at which two documents are near duplicates."
    )
    verify_candidates: bool = Field(
        True, description="Keep an LSH candidate pair only if its estimated Jaccard reaches the threshold."
    )
    seed: int = Field(42, description="MinHash permutation seed.")
    memory_budget_mb: int = Field(
        1024, ge=16, description="Memory one worker may use: sizes shuffle partitions, reserved per fingerprint actor."
    )
    batch_size: int = Field(256, ge=1, description="Documents per fingerprinting batch.")
    workers: int | None = Field(None, ge=1, description="Fingerprinting actors; None sizes from the cluster CPUs.")
    min_partitions: int | None = Field(
        None, ge=1, description="Fewest shuffle partitions; None uses the cluster's CPU count."
    )
    max_cc_rounds: int = Field(
        40, ge=1, description="Connected-components rounds before the phase fails as not converged."
    )
    precision_sample: int = Field(
        200, ge=0, description="Candidate pairs sampled to check precision against exact Jaccard."
    )


class DecontamConfig(Section):
    """N-gram overlap against agent-benchmark test items (phase 3); the rule is in raypipe/decontam.py."""

    enabled: bool = Field(True, description="Drop documents that contain benchmark test items.")
    benchmarks: str | None = Field(
        None, description="URI of the benchmark test sets (BFCL, API-Bank, APIBench, ToolBench, OpenFunctions)."
    )
    ngram: int = Field(13, ge=4, description="Words per indexed window.")
    min_ngram: int = Field(
        8, ge=1, description="Fields shorter than ngram but at least this many words are matched whole."
    )
    min_matches: int = Field(1, ge=1, description="Matching windows that make a document contaminated.")


class RunConfig(Section):
    """The whole run: inputs, output prefix and one section per phase."""

    input: str | list[str] = Field(
        ..., description="WARC URI, glob, list of them, or a Common Crawl crawl id (CC-MAIN-YYYY-WW)."
    )
    output: str = Field(..., description="Output URI prefix (s3://bucket/prefix or a local directory).")
    limit_files: int | None = Field(None, ge=1, description="Read at most this many WARC files.")
    limit_records: int | None = Field(
        None, ge=1, description="Stop each WARC file after this many records (demo over HTTPS)."
    )
    seed: int = Field(1234, description="Seed for every sampling decision, so reruns are identical.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Storage access.")
    extract: ExtractConfig = Field(default_factory=ExtractConfig, description="HTML to text.")
    quality: QualityConfig = Field(default_factory=QualityConfig, description="Quality heuristics.")
    ray: RayConfig = Field(default_factory=RayConfig, description="Ray cluster settings.")
    dedup: DedupConfig = Field(default_factory=DedupConfig, description="Exact and near-duplicate removal.")
    decontam: DecontamConfig = Field(default_factory=DecontamConfig, description="Benchmark decontamination.")

    @field_validator("output")
    @classmethod
    def _output_not_empty(cls, v: str) -> str:
        if not v.strip() or v.rstrip("/") in ("s3:", "s3:/", "s3://"):
            raise ValueError("output must name a bucket/prefix or a directory")
        return v.rstrip("/")

    def config_hash(self) -> str:
        """Stable hash of the effective configuration (recorded in the manifest)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


def _parse_scalar(text: str) -> Any:
    """Parse a ``--set`` value with YAML's safe rules, so ``3``, ``true`` and ``[a, b]`` mean what they say."""
    return yaml.safe_load(text) if text != "" else ""


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``a.b.c=value`` override to a raw config mapping in place."""
    if "=" not in assignment:
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    key, _, raw = assignment.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set has an empty key in {assignment!r}")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part!r} is not a section")
        node = child
    node[parts[-1]] = _parse_scalar(raw)


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            lines.append(f"  unknown key '{loc}'")
        else:
            lines.append(f"  {loc}: {e['msg']}")
    return "\n".join(lines)


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, base: dict | None = None
) -> RunConfig:
    """Load YAML (safe loader only), apply ``--set`` overrides, and validate into a RunConfig."""
    data: dict[str, Any] = dict(base or {})
    source = "overrides"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
        try:
            loaded = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must be a mapping at the top level")
        data.update(loaded)
    for item in overrides or []:
        apply_override(data, item)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from None
