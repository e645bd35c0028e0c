"""Phase 3, clean: decontamination, global exact dedup and MinHash-LSH near dedup on Ray Data.

``run_clean(ds, cfg, store)`` takes documents (``doc_id``, ``url``, ``text``, ``stream`` and
optionally an earlier ``drop_reason``) and returns every row, with ``drop_reason`` set to
``contamination``, ``duplicate_exact`` or ``duplicate_near`` where this phase drops it and
``duplicate_of`` naming the document it duplicates. Nothing is removed: ``candidates/`` accounts
for every page, and the caller filters.

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
3. The labels (only the dropped duplicates) are joined back to the rows by ``doc_id`` (a Ray Data
   hash join, partitioned the same way).

The stats dict reports counts per reason, per benchmark (documents and item ids), the
near-duplicate graph (candidates, verified pairs, rounds) and the measured precision.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray
import ray.data
from ray.data import ActorPoolStrategy

from raypipe.config import DecontamConfig, DedupConfig, RunConfig
from raypipe.decontam import CONTAMINATION, DecontamIndex, DecontamMatcher, build_index
from raypipe.dedup.components import connected_components
from raypipe.dedup.exact import exact_duplicates
from raypipe.dedup.lsh import candidate_edges, candidate_probability
from raypipe.dedup.minhash import DedupFingerprinter
from raypipe.dedup.normalize import normalize_text, word_hashes, words
from raypipe.dedup.precision import pair_sample_mask, precision_report
from raypipe.dedup.shuffle import cluster_cpus, partitions_for
from raypipe.dedup.survivor import doc_ids_of, rank_keys
from raypipe.filesource import parquet_dataset
from raypipe.stage import LIGHT_TASK_CPUS, map_table
from raypipe.storage import OutputStore

log = logging.getLogger(__name__)

DUPLICATE_EXACT = "duplicate_exact"
DUPLICATE_NEAR = "duplicate_near"
FINGERPRINTS = "clean/fingerprints"
_WORK_COLUMNS = ["lsh_buckets", "minhash_sketch", "rank_key", "_eligible", "_label_reason", "_label_of"]
_FINGERPRINT_TYPES = {
    "text_hash": pa.string(),
    "lsh_buckets": pa.list_(pa.uint64()),
    "minhash_sketch": pa.binary(),
    "contaminated": pa.bool_(),
    "contamination_ngrams": pa.int64(),
    "contamination_benchmarks": pa.list_(pa.string()),
    "contamination_items": pa.list_(pa.string()),
    "rank_key": pa.string(),
    "_eligible": pa.bool_(),
}


class CleanFingerprinter:
    """Stage: every row-local signal of the clean phase, from one normalization of the text.

    Adds the columns of :class:`DedupFingerprinter` and :class:`DecontamMatcher`, ``rank_key``
    (the survivor order, :mod:`raypipe.dedup.survivor`) and ``_eligible`` (no earlier
    ``drop_reason`` and not contaminated: takes part in dedup).
    ``index`` (or a Ray object reference to it: fetched once per actor) is None when
    decontamination is disabled.
    """

    def __init__(self, dedup: DedupConfig, decontam: DecontamConfig, index: DecontamIndex | ray.ObjectRef | None):
        if isinstance(index, ray.ObjectRef):
            index = ray.get(index)
        self.dedup = DedupFingerprinter(dedup)
        self.matcher = DecontamMatcher(index, decontam.min_matches) if index is not None else None

    def __call__(self, batch: pd.DataFrame) -> pa.Table:
        normalized = [normalize_text(t) for t in batch["text"].tolist()]
        hashes = word_hashes([words(n) for n in normalized])
        added: dict[str, list[Any]] = self.dedup.columns(normalized, hashes)
        if self.matcher is not None:
            added.update(self.matcher.columns(hashes))
        else:
            added.update(
                contaminated=[False] * len(batch),
                contamination_ngrams=[0] * len(batch),
                contamination_benchmarks=[[] for _ in range(len(batch))],
                contamination_items=[[] for _ in range(len(batch))],
            )
        added["rank_key"] = rank_keys(batch["doc_id"], batch.get("selected")).tolist()
        active = batch["drop_reason"].isna() if "drop_reason" in batch else pd.Series(True, index=batch.index)
        added["_eligible"] = (active.to_numpy() & ~np.asarray(added["contaminated"], dtype=bool)).tolist()
        base = batch.drop(columns=[c for c in [*_FINGERPRINT_TYPES, "drop_reason"] if c in batch])
        table = pa.Table.from_pandas(base, preserve_index=False)
        reasons = batch["drop_reason"].astype(object).where(~active, None) if "drop_reason" in batch else None
        table = table.append_column(
            "drop_reason", pa.array([None] * len(batch) if reasons is None else reasons, pa.string())
        )
        for name, typ in _FINGERPRINT_TYPES.items():
            table = table.append_column(name, pa.array(added[name], type=typ))
        return table


def _finalize(batch: pd.DataFrame) -> pd.DataFrame:
    """Set ``drop_reason``/``duplicate_of`` by precedence and drop the work columns."""
    reason = batch["drop_reason"].astype(object)
    prior = reason.notna()
    reason = reason.where(prior, None)
    contaminated = ~prior & batch["contaminated"].astype(bool)
    label = batch["_label_reason"] if "_label_reason" in batch else pd.Series(None, index=batch.index, dtype=object)
    label_of = batch["_label_of"] if "_label_of" in batch else pd.Series(None, index=batch.index, dtype=object)
    duplicate = ~prior & ~contaminated & label.notna()
    reason = reason.where(~contaminated, CONTAMINATION).where(~duplicate, label)
    batch = batch.assign(drop_reason=reason, duplicate_of=label_of.astype(object).where(duplicate, None))
    return batch.drop(columns=[c for c in _WORK_COLUMNS if c in batch])


def _arrow_fs(store: OutputStore) -> pafs.FileSystem:
    return pafs.PyFileSystem(pafs.FSSpecHandler(store.fs)) if store.is_s3 else pafs.LocalFileSystem()


def _column_bytes(fs: pafs.FileSystem, path: str, columns: list[str] | None) -> int:
    """Uncompressed bytes of some columns of a parquet dataset, from the file footers only."""
    total = 0
    for fragment in pq.ParquetDataset(path, filesystem=fs).fragments:
        meta = fragment.metadata
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                col = group.column(c)
                if columns is None or col.path_in_schema.split(".")[0] in columns:
                    total += col.total_uncompressed_size
    return total


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
    counts = rows.map_batches(_report_rows, batch_format="pandas", num_cpus=LIGHT_TASK_CPUS).groupby(
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

    return {
        r["doc_id"]: r["text"]
        for r in fingerprints.map_batches(pick, batch_format="pandas", num_cpus=LIGHT_TASK_CPUS).take_all()
    }


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
    parts = [
        sources[name].map_batches(
            _as_pairs, fn_kwargs={"sample": name}, batch_format="pandas", num_cpus=LIGHT_TASK_CPUS
        )
        for name in fractions
    ]
    union = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    rows = union.map_batches(
        _sample_rows, fn_kwargs={"fractions": fractions}, batch_format="pandas", num_cpus=LIGHT_TASK_CPUS
    ).take_all()
    sampled = pd.DataFrame(rows).sort_values(["sample", "src", "dst"]).groupby("sample").head(k)
    texts = _texts(fingerprints, set(sampled["src"]) | set(sampled["dst"]))
    candidates = sampled[sampled["sample"] == "candidates"]
    report = precision_report(candidates, texts, cfg.threshold, cfg.shingle_words)
    survivors = sampled[sampled["sample"] == "survivor"]
    if len(survivors):
        report["survivor_pairs"] = precision_report(survivors, texts, cfg.threshold, cfg.shingle_words)["kept"]
    return report


def fingerprinter_cpus(cpus: float, workers: int) -> float:
    """CPUs per fingerprinting actor: a whole one where the pool still leaves room for one read
    and one write task (``LIGHT_TASK_CPUS`` each), a share of what is left otherwise. On a 1-CPU
    Ray a whole-CPU actor left nothing for its own readers and the phase waited forever."""
    room = cpus - 2 * LIGHT_TASK_CPUS
    return 1.0 if room >= workers else max(LIGHT_TASK_CPUS, room / workers)


def run_clean(
    ds: ray.data.Dataset, cfg: RunConfig, store: OutputStore, index: DecontamIndex | None = None
) -> tuple[ray.data.Dataset, dict[str, Any]]:
    """Run the clean phase on documents; returns every row labelled, and the phase's stats.

    ``index`` is the decontamination index when the caller already built one (``build_index``);
    otherwise it is built here from ``cfg.decontam.benchmarks``.
    """
    started = time.monotonic()
    dedup, decontam = cfg.dedup, cfg.decontam
    if decontam.enabled and index is None:
        index = build_index(decontam, cfg.storage)
    if not decontam.enabled:
        index = None
    fs = _arrow_fs(store)
    path = store.key(FINGERPRINTS)
    store.delete(FINGERPRINTS)

    cpus = cluster_cpus()
    workers = dedup.workers or max(1, int(cpus) - 1)
    budget = dedup.memory_budget_mb * 1024 * 1024
    ds.map_batches(
        CleanFingerprinter,
        fn_constructor_args=(dedup, decontam, ray.put(index) if index is not None else None),
        compute=ActorPoolStrategy(min_size=1, max_size=workers),
        batch_size=dedup.batch_size,
        batch_format="pandas",
        num_cpus=fingerprinter_cpus(cpus, workers),
        memory=budget,
    ).write_parquet(path, filesystem=fs, ray_remote_args={"num_cpus": LIGHT_TASK_CPUS})
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
        keys = narrow.map_batches(
            _eligible_only,
            fn_kwargs={"columns": ["doc_id", "rank_key", "text_hash"]},
            batch_format="pandas",
            num_cpus=LIGHT_TASK_CPUS,
        )
        exact = exact_duplicates(keys, partitions).materialize()
        counts[DUPLICATE_EXACT] = exact.count()
        labels.append(
            exact.map_batches(
                _labels,
                fn_kwargs={"reason": DUPLICATE_EXACT, "of_column": "duplicate_of"},
                batch_format="pandas",
                num_cpus=LIGHT_TASK_CPUS,
            )
        )
    seconds["exact"] = round(time.monotonic() - started - sum(seconds.values()), 1)
    if dedup.near:
        rows = narrow.map_batches(
            _eligible_only,
            fn_kwargs={"columns": ["doc_id", "rank_key", "text_hash", "lsh_buckets", "minhash_sketch"]},
            batch_format="pandas",
            num_cpus=LIGHT_TASK_CPUS,
        )
        edges = candidate_edges(
            rows, dedup.threshold, dedup.verify_candidates, partitions, collapse_exact=dedup.exact
        ).materialize()
        n_verified = int(edges.sum("verified") or 0) if edges.count() else 0
        components, rounds = None, 0
        if n_verified:
            verified = edges.map_batches(_verified, batch_format="pandas", num_cpus=LIGHT_TASK_CPUS)
            ranked, rounds = connected_components(verified, partitions, dedup.max_cc_rounds)
            components = map_table(ranked, _component_doc_ids, batch_format="pandas").materialize()
            counts[DUPLICATE_NEAR] = components.count()
            labels.append(
                components.map_batches(
                    _labels,
                    fn_kwargs={"reason": DUPLICATE_NEAR, "of_column": "component"},
                    batch_format="pandas",
                    num_cpus=LIGHT_TASK_CPUS,
                )
            )
        near_stats = {
            "candidate_pairs": edges.count(),
            "verified_pairs": n_verified,
            "components_rounds": rounds,
            "lsh": {
                "bands": dedup.bands,
                "rows": dedup.rows,
                "num_perm": dedup.num_perm,
                "shingle_words": dedup.shingle_words,
                "threshold": dedup.threshold,
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
        result = fingerprints.join(all_labels, "left_outer", num_partitions=full_partitions, on=("doc_id",))
    else:
        result = fingerprints
    result = result.map_batches(_finalize, batch_format="pandas", num_cpus=LIGHT_TASK_CPUS)

    report_columns = ["drop_reason", "contaminated", "contamination_benchmarks", "contamination_items"]
    earlier, counts[CONTAMINATION], contamination = _report(fingerprints.select_columns(report_columns), partitions)
    stats = {
        "documents": documents,
        "dropped_earlier": earlier,
        "dropped": counts,
        "kept": documents - earlier - sum(counts.values()),
        "contamination": {"benchmarks": contamination, "index": index.summary() if index is not None else None},
        "near_dedup": near_stats,
        "partitions": {"keys": partitions, "rows": full_partitions},
        "seconds": {**seconds, "report": round(time.monotonic() - started - sum(seconds.values()), 1)},
    }
    log.info("clean phase: %d documents, dropped %s, kept %d", documents, counts, stats["kept"])
    return result, stats
