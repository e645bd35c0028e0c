"""Phase 3, clean: decontamination, global exact dedup and MinHash-LSH near dedup on Ray Data.

``clean_documents(ds, cfg, store)`` takes documents (``doc_id``, ``url``, ``text``, ``stream`` and
optionally an earlier ``drop_reason`` and ``select_reason``) and returns every row, tagged
(``contaminated``, ``duplicate``, ``duplicate_of``) and with the verdict of one
:class:`~raypipe.select.Select` over :data:`CLEAN_RULES`: ``drop_reason`` is ``contamination``,
``duplicate_exact`` or ``duplicate_near`` where this phase drops the row (``stream`` then null),
and kept rows keep the stream an earlier verdict routed them to. Nothing is removed:
``candidates/`` accounts for every page, and the caller filters on ``stream``.

Order and precedence: a row dropped by an earlier phase keeps its reason and takes no part here.
Contamination is decided first and contaminated rows take no part in dedup (otherwise a clean
near-copy could be dropped as the duplicate of a leaked page that is itself dropped). Exact dedup
and near dedup then run over the remaining rows; a document is ``duplicate_exact`` when another
document with the same normalized text outranks it, else ``duplicate_near`` when another member of
its near-duplicate component outranks it (the component's survivor).

The survivor rule (:mod:`raypipe.dedup.survivor`): **seeds first (``doc_id`` starting with
``seed:``), then selected pages (an optional ``selected`` column), then the rest; ties go to the
smallest ``doc_id``** (a stable key the caller derives from the page, e.g. its url and WARC record
id). So a seed copied on the web keeps the seed, and a selected page beats its unselected copy.
Results do not depend on input order or on the number of workers. ``doc_id`` must be unique.

How it runs, and where memory is bounded:

1. One streaming pass computes every row-local signal (normalized-text hash, MinHash band keys
   and sketch, benchmark n-gram matches) in an actor pool that received the decontamination
   index once, and writes the rows to ``clean/fingerprints/`` under the output prefix (so the
   input is read once and the phase can be inspected or resumed from there).
2. Exact dedup, LSH bucketing and connected components are hash-partitioned shuffles over
   narrow columns read back from that parquet (no text); the number of partitions is derived from
   the data size and ``dedup.memory_budget_mb``, so one partition always fits one worker's budget.
   Candidate pairs whose MinHash estimate is near the threshold are then checked by exact
   shingle Jaccard (:mod:`raypipe.dedup.verify`: two shuffles, the only ones that read the text).
3. The labels (only the dropped duplicates) are attached back to the rows by ``doc_id`` in one
   hash shuffle of both sides (:func:`raypipe.clean.labels.attach_labels`).

``run(cfg, store, state)`` is the phase: scored pages, seeds and the configured code and text
datasets in, ``clean/documents`` (with text) and ``candidates/`` (every web page, no text) out.

The stats dict reports counts per reason, per benchmark (documents and item ids), the
near-duplicate graph (candidates, verified pairs, rounds) and the measured precision.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray
import ray.data

from raypipe.clean.decontam import CONTAMINATION, DecontamIndex, NoBenchmarkSource, build_index
from raypipe.clean.fingerprint import CleanFingerprinter
from raypipe.clean.labels import attach_labels
from raypipe.config import DedupConfig, RunConfig
from raypipe.dedup.components import connected_components
from raypipe.dedup.exact import exact_duplicates
from raypipe.dedup.lsh import candidate_edges, candidate_probability
from raypipe.dedup.precision import pair_hashes, pair_sample_mask, precision_report
from raypipe.dedup.shuffle import partitions_for
from raypipe.dedup.survivor import doc_ids_of
from raypipe.dedup.verify import verify_edges, verify_partitions
from raypipe.defaults import describe_benchmarks
from raypipe.extract.stage import EXTRACT_TAGS
from raypipe.select import Flag, PriorRoute, Select, TagReason
from raypipe.stage import LIGHT_TASK_CPUS, Resources, apply, cluster_cpus, map_table
from raypipe.store.filesource import parquet_dataset, retry_transfer
from raypipe.store.parts import CANDIDATES, CLEAN, SCORED, load_seed_table, read_parts, write_dataset
from raypipe.store.state import RunState
from raypipe.store.storage import OutputStore
from raypipe.streams import DOC_SCHEMA, configured_streams

log = logging.getLogger(__name__)

DUPLICATE_EXACT = "duplicate_exact"
DUPLICATE_NEAR = "duplicate_near"
FINGERPRINTS = "clean/fingerprints"
_FOOTER_THREADS = 32  # parquet footers read at once when sizing the dedup shuffles
CLEAN_RULES = [TagReason("drop_reason"), Flag("contaminated", CONTAMINATION), TagReason("duplicate")]
"""The clean phase's drop rules, in precedence order: a row dropped earlier keeps its reason, then
contamination, then duplicates (contaminated rows take no part in dedup, see above)."""
_WORK_COLUMNS = ["lsh_buckets", "minhash_sketch", "rank_key", "_eligible", "_label_reason", "_label_of"]

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


def _tag_duplicates(batch: pd.DataFrame) -> pd.DataFrame:
    """Turn the joined labels into tags (``duplicate``: exact or near, ``duplicate_of``) and drop
    the work columns; :data:`CLEAN_RULES` under :class:`Select` decides."""
    none = pd.Series(None, index=batch.index, dtype=object)
    label = batch["_label_reason"].astype(object) if "_label_reason" in batch else none
    label_of = batch["_label_of"].astype(object) if "_label_of" in batch else none
    batch = batch.assign(duplicate=label.where(label.notna(), None), duplicate_of=label_of.where(label.notna(), None))
    return batch.drop(columns=[c for c in _WORK_COLUMNS if c in batch])


def _first_part(fs: pafs.FileSystem, path: str) -> str:
    files = sorted(
        f.path for f in fs.get_file_info(pafs.FileSelector(path, recursive=True)) if f.path.endswith(".parquet")
    )
    return files[0]


def _arrow_fs(store: OutputStore) -> pafs.FileSystem:
    return pafs.PyFileSystem(pafs.FSSpecHandler(store.fs)) if store.is_s3 else pafs.LocalFileSystem()


def _column_bytes(fs: pafs.FileSystem, path: str, columns: list[str] | None) -> int:
    """Uncompressed bytes of some columns of a parquet dataset, from the file footers only.

    The footers are read in parallel (``_FOOTER_THREADS`` at a time): one small ranged GET each,
    latency-bound, and at dump scale there are thousands of files.
    """
    files = sorted(
        f.path for f in fs.get_file_info(pafs.FileSelector(path, recursive=True)) if f.path.endswith(".parquet")
    )

    def size(file: str) -> int:
        meta = retry_transfer(partial(pq.read_metadata, file, filesystem=fs))
        total = 0
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                col = group.column(c)
                if columns is None or col.path_in_schema.split(".")[0] in columns:
                    total += col.total_uncompressed_size
        return total

    if len(files) <= 1:
        return sum(map(size, files))
    with ThreadPoolExecutor(min(_FOOTER_THREADS, len(files))) as pool:
        return sum(pool.map(size, files))


def _eligible_only(batch: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return batch.loc[batch["_eligible"].astype(bool), columns]


def _labels(frame: pd.DataFrame, reason: str, of_column: str) -> pd.DataFrame:
    return pd.DataFrame({"doc_id": frame["doc_id"], "_label_reason": reason, "_label_of": frame[of_column]})


def _verified(batch: pd.DataFrame) -> pd.DataFrame:
    """Verified edges named by rank key: the components' smallest nodes are then the survivors."""
    kept = batch.loc[batch["verified"].astype(bool)]
    return pd.DataFrame({"src": kept["src_rank"], "dst": kept["dst_rank"]})


def _component_doc_ids(batch: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"doc_id": doc_ids_of(batch["doc_id"]), "component": doc_ids_of(batch["component"])})


def _report_rows(batch: pd.DataFrame) -> pd.DataFrame:
    """Rows to count in one groupby: ``("", "earlier")`` per row dropped by an earlier phase,
    ``("", "contaminated")`` per contaminated document, ``(benchmark, "")`` per document and
    benchmark, ``(benchmark, item)`` per document and item."""
    earlier = batch["drop_reason"].notna()
    hit = batch[~earlier & batch["contaminated"].astype(bool)]
    rows = [("", "earlier")] * int(earlier.sum()) + [("", "contaminated")] * len(hit)
    rows += [(b, "") for benches in hit["contamination_benchmarks"] for b in benches]
    rows += [tuple(i.split(":", 1)) for items in hit["contamination_items"] for i in items]
    return pd.DataFrame(rows, columns=["benchmark", "item"])


def _report(rows: ray.data.Dataset, partitions: int) -> tuple[int, int, dict[str, Any]]:
    """(rows dropped earlier, contaminated documents, per-benchmark documents and item counts)."""
    counts = map_table(rows, _report_rows, batch_format="pandas").groupby(
        ["benchmark", "item"], num_partitions=partitions
    )
    earlier = contaminated = 0
    report: dict[str, Any] = {}
    for row in sorted(counts.count().take_all(), key=lambda r: (r["benchmark"], r["item"])):
        n = int(row["count()"])
        if not row["benchmark"]:
            earlier, contaminated = (n, contaminated) if row["item"] == "earlier" else (earlier, n)
            continue
        entry = report.setdefault(row["benchmark"], {"documents": 0, "items": {}})
        if row["item"]:
            entry["items"][row["item"]] = n
        else:
            entry["documents"] = n
    return earlier, contaminated, report


def _sample_rows(batch: pd.DataFrame, fractions: dict[str, float]) -> pd.DataFrame:
    keep = np.zeros(len(batch), dtype=bool)
    for name, fraction in fractions.items():
        part = (batch["sample"] == name).to_numpy()
        keep[part] = pair_sample_mask(batch[part], fraction)
    return batch[keep]


def _as_pairs(batch: pd.DataFrame, sample: str) -> pd.DataFrame:
    if sample == "survivor":
        return pd.DataFrame(
            {
                "src": batch["doc_id"],
                "dst": batch["component"],
                "est_jaccard": np.nan,
                "verified": True,
                "sample": sample,
            }
        )
    return batch[["src", "dst", "est_jaccard", "verified"]].assign(sample=sample)


def _texts(fingerprints: ray.data.Dataset, ids: set[str]) -> dict[str, str]:
    def pick(batch: pd.DataFrame) -> pd.DataFrame:
        return batch.loc[batch["doc_id"].isin(ids), ["doc_id", "text"]]

    return {r["doc_id"]: r["text"] for r in map_table(fingerprints, pick, batch_format="pandas").take_all()}


def _precision(
    fingerprints: ray.data.Dataset, edges: ray.data.Dataset, components: ray.data.Dataset | None, cfg: DedupConfig
) -> dict[str, Any]:
    """Exact-Jaccard check of about ``precision_sample`` LSH candidate pairs and as many
    (document, survivor) decisions, chosen by pair hash (the same sample on any cluster)."""
    k = cfg.precision_sample
    sources = {"candidates": edges, "survivor": components}
    totals = {name: ds.count() for name, ds in sources.items() if ds is not None}
    fractions = {name: min(1.0, 2.0 * k / n) for name, n in totals.items() if n}
    if not k or not fractions:
        return {"threshold": cfg.threshold, "candidates": {"pairs": 0}}
    parts = [map_table(sources[name], _as_pairs, batch_format="pandas", sample=name) for name in fractions]
    union = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    rows = map_table(union, _sample_rows, batch_format="pandas", fractions=fractions).take_all()
    # Trim to k by pair hash (the smallest hashes of a Bernoulli sample are a uniform sample): trimming
    # by id kept the pairs of the smallest ids, and ids are not independent of how alike two texts are.
    sampled = pd.DataFrame(rows)
    sampled = sampled.assign(_hash=pair_hashes(sampled)).sort_values(["sample", "_hash", "src", "dst"])
    sampled = sampled.groupby("sample").head(k)
    texts = _texts(fingerprints, set(sampled["src"]) | set(sampled["dst"]))
    candidates = sampled[sampled["sample"] == "candidates"]
    report = precision_report(candidates, texts, cfg.threshold, cfg.shingle_words)
    survivors = sampled[sampled["sample"] == "survivor"]
    if len(survivors):
        report["survivor_pairs"] = precision_report(survivors, texts, cfg.threshold, cfg.shingle_words)["kept"]
    return report


def clean_documents(
    ds: ray.data.Dataset,
    cfg: RunConfig,
    store: OutputStore,
    index: DecontamIndex | None = None,
    allowed: Iterable[str] = (),
) -> tuple[ray.data.Dataset, dict[str, Any]]:
    """Run the clean phase on documents; returns every row labelled, and the phase's stats.

    ``index`` is the decontamination index when the caller already built one (``build_index``);
    otherwise it is built here from ``cfg.decontam.benchmarks``, without the keys found in
    ``allowed`` (the run's seed texts: API docs the benchmarks share, so no seed is ever flagged).
    """
    started = time.monotonic()
    dedup, decontam = cfg.dedup, cfg.decontam
    warnings: list[str] = []
    if decontam.enabled and index is None:
        try:
            index = build_index(decontam, cfg.storage, allowed)
        except NoBenchmarkSource as e:
            warnings.append(
                f"NO BENCHMARK SOURCE: decontamination matched nothing ({e}); benchmark test items may be in the corpus"
            )
            log.error("clean phase: %s", warnings[-1])
    if not decontam.enabled:
        index = None
        warnings.append(
            "decontamination is disabled (decontam.enabled=false): benchmark test items may be in the corpus"
        )
        log.warning("clean phase: %s", warnings[-1])
    fs = _arrow_fs(store)
    path = store.key(FINGERPRINTS)
    store.delete(FINGERPRINTS)

    cpus = cluster_cpus()
    workers = dedup.workers or max(1, int(cpus) - 1)
    budget = dedup.memory_budget_mb * 1024 * 1024
    fingerprinter = CleanFingerprinter(
        dedup,
        decontam,
        ray.put(index) if index is not None else None,
        Resources(cpus=1.0, actors=workers, memory=budget),
    )
    apply(ds, fingerprinter).write_parquet(path, filesystem=fs, ray_remote_args={"num_cpus": LIGHT_TASK_CPUS})
    seconds = {"fingerprint": round(time.monotonic() - started, 1)}

    fingerprints = parquet_dataset(path, fs)
    documents = fingerprints.count()
    key_bytes = _column_bytes(fs, path, ["doc_id", "rank_key", "text_hash", "minhash_sketch", "lsh_buckets"])
    partitions = partitions_for(key_bytes * (1 + dedup.bands), dedup.memory_budget_mb, dedup.min_partitions)
    narrow = fingerprints.select_columns(
        ["doc_id", "rank_key", "text_hash", "lsh_buckets", "minhash_sketch", "_eligible"]
    )

    labels: list[ray.data.Dataset] = []
    counts = {CONTAMINATION: 0, DUPLICATE_EXACT: 0, DUPLICATE_NEAR: 0}
    near_stats: dict[str, Any] = {}
    if dedup.exact:
        keys = map_table(narrow, _eligible_only, batch_format="pandas", columns=["doc_id", "rank_key", "text_hash"])
        exact = exact_duplicates(keys, partitions).materialize()
        counts[DUPLICATE_EXACT] = exact.count()
        labels.append(
            map_table(exact, _labels, batch_format="pandas", reason=DUPLICATE_EXACT, of_column="duplicate_of")
        )
    seconds["exact"] = round(time.monotonic() - started - sum(seconds.values()), 1)
    if dedup.near:
        rows = map_table(
            narrow,
            _eligible_only,
            batch_format="pandas",
            columns=["doc_id", "rank_key", "text_hash", "lsh_buckets", "minhash_sketch"],
        )
        edges = candidate_edges(
            rows, dedup.threshold, dedup.verify_candidates, partitions, collapse_exact=dedup.exact
        ).materialize()
        exact_checked = 0
        if dedup.verify_candidates and edges.count():
            texts = map_table(
                fingerprints.select_columns(["doc_id", "text", "_eligible"]),
                _eligible_only,
                batch_format="pandas",
                columns=["doc_id", "text"],
            )
            sizing = partial(
                verify_partitions,
                documents=documents,
                text_bytes=_column_bytes(fs, path, ["doc_id", "text"]),
                budget_mb=dedup.memory_budget_mb,
                min_partitions=dedup.min_partitions,
            )
            args = (dedup.threshold, dedup.verify_margin, dedup.shingle_words, sizing)
            edges, exact_checked = verify_edges(edges, texts, *args)
            edges = edges.materialize()
        n_verified = int(edges.sum("verified") or 0) if edges.count() else 0
        components, rounds = None, 0
        if n_verified:
            verified = map_table(edges, _verified, batch_format="pandas")
            ranked, rounds = connected_components(verified, partitions, dedup.max_cc_rounds)
            components = map_table(ranked, _component_doc_ids, batch_format="pandas").materialize()
            counts[DUPLICATE_NEAR] = components.count()
            labels.append(
                map_table(components, _labels, batch_format="pandas", reason=DUPLICATE_NEAR, of_column="component")
            )
        near_stats = {
            "candidate_pairs": edges.count(),
            "verified_pairs": n_verified,
            "exact_checked_pairs": exact_checked,
            "components_rounds": rounds,
            "lsh": {
                "bands": dedup.bands,
                "rows": dedup.rows,
                "num_perm": dedup.num_perm,
                "shingle_words": dedup.shingle_words,
                "threshold": dedup.threshold,
                "verify_margin": dedup.verify_margin,
                "candidate_probability": {
                    str(s): round(candidate_probability(s, dedup.bands, dedup.rows), 4)
                    for s in (0.5, 0.6, 0.7, 0.8, 0.9)
                },
            },
            "precision": _precision(fingerprints, edges, components, dedup),
        }

    seconds["near"] = round(time.monotonic() - started - sum(seconds.values()), 1)
    full_partitions = partitions_for(_column_bytes(fs, path, None), dedup.memory_budget_mb, dedup.min_partitions)
    if counts[DUPLICATE_EXACT] + counts[DUPLICATE_NEAR]:
        all_labels = labels[0].union(*labels[1:]) if len(labels) > 1 else labels[0]
        schema = pq.read_schema(_first_part(fs, path), filesystem=fs)
        result = attach_labels(fingerprints, all_labels, schema, full_partitions)
    else:
        result = fingerprints
    result = apply(map_table(result, _tag_duplicates, batch_format="pandas"), Select(CLEAN_RULES, PriorRoute()))

    report_columns = ["drop_reason", "contaminated", "contamination_benchmarks", "contamination_items"]
    earlier, counts[CONTAMINATION], contamination = _report(fingerprints.select_columns(report_columns), partitions)
    stats = {
        "documents": documents,
        "dropped_earlier": earlier,
        "dropped": counts,
        "kept": documents - earlier - sum(counts.values()),
        "contamination": {
            "source": describe_benchmarks(decontam.benchmarks) if index is not None else None,
            "benchmarks": contamination,
            "index": index.summary() if index is not None else None,
        },
        "warnings": warnings,
        "near_dedup": near_stats,
        "partitions": {"keys": partitions, "rows": full_partitions},
        "seconds": {**seconds, "report": round(time.monotonic() - started - sum(seconds.values()), 1)},
    }
    log.info("clean phase: %d documents, dropped %s, kept %d", documents, counts, stats["kept"])
    return result, stats


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


def _web_pages(batch: pa.Table) -> pa.Table:
    return batch.filter(pc.fill_null(pc.equal(batch.column("source"), "web"), False))


def run(cfg: RunConfig, store: OutputStore, state: RunState) -> dict[str, Any]:
    """Phase 3: decontamination, exact and near dedup over agent pages, text pages, seeds and the
    configured code and text datasets, global across the run; writes ``clean/documents`` (with
    text) and ``candidates/`` (every web page, no text)."""
    done = state.finished("clean")
    if done:
        log.info("clean: already done, skipping")
        return done
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
    cleaned, clean_stats = clean_documents(pages.union(seeds, *datasets), cfg, store, allowed=seed_table["text"])
    rows = write_dataset(cleaned, cfg, store, CLEAN)
    pages_only = map_table(read_parts(store, CLEAN), _web_pages)
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
