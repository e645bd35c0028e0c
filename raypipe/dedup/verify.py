"""Verification of LSH candidate pairs: by the MinHash estimate where it is decisive, else by the
exact Jaccard similarity of the two documents' shingle sets, computed on the workers.

Why: the estimate from a 256-value b-bit sketch has a standard deviation of about 0.03 at Jaccard
0.7, so deciding every pair by it merges pairs just under the threshold and keeps apart pairs just
over it (``bench/dedup.py`` measured precision 0.93 and recall 0.91 around 0.7). A pair whose
estimate is more than ``dedup.verify_margin`` (several standard deviations) from the threshold is
decided by the estimate; the uncertain pairs in between are decided by exact Jaccard. A margin of
1 checks every candidate exactly, 0 trusts the estimate alone.

How it scales (the same idea as NeMo Curator's Jaccard step, written over raypipe's shuffles):

1. The uncertain pairs become two *endpoint* rows each, keyed by one of their documents; they are
   hash-partitioned by ``doc_id`` together with the documents' texts, so each partition holds some
   documents and every endpoint row that names them. There each document that has an endpoint is
   shingled once (the MinHash input: normalized words, ``shingle_words``-word windows hashed to
   64 bits, :mod:`raypipe.dedup.minhash`) and its sorted shingle hashes are attached to its rows.
2. The endpoint rows are hash-partitioned by pair, so both halves of a pair meet in one call,
   which intersects the two sorted arrays and keeps the pair when ``|A & B| / |A | B|`` reaches
   the threshold.

Nothing per pair or per document reaches the driver (it only counts the uncertain pairs to size
the partitions), and the result is a function of the data alone: the same on any number of
workers and in any input order. Two distinct 64-bit shingle hashes collide with probability about
``2**-64`` per pair of shingles, so the hashed sets give the exact string-shingle Jaccard of
:mod:`raypipe.dedup.precision` for all practical purposes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import ray.data

from raypipe.dedup.minhash import shingle_hashes
from raypipe.dedup.normalize import normalize_text, word_hashes, words
from raypipe.dedup.shuffle import partitioned_map, partitions_for
from raypipe.stage import map_table

EDGE_COLUMNS = ["src", "dst", "src_rank", "dst_rank", "est_jaccard", "exact_jaccard", "verified"]
_PAIR = "_pair"
_IS_DOC = "_is_doc"
_ENDPOINTS = pa.schema(
    [
        ("doc_id", pa.string()),
        ("text", pa.string()),
        ("src", pa.string()),
        ("dst", pa.string()),
        ("src_rank", pa.string()),
        ("dst_rank", pa.string()),
        ("est_jaccard", pa.float64()),
        (_IS_DOC, pa.bool_()),
    ]
)
# Fewest rows per partition of the pair shuffle: Ray's hash-shuffle reduce fails on a partition
# that receives no rows (its empty blocks carry no _partition column), and a few uncertain pairs
# over many partitions would leave some empty; at 64 rows per partition on average, the chance
# that one stays empty is about partitions * exp(-64).
MIN_ROWS_PER_PARTITION = 64
# A partition's shingle arrays take about 1.5 times the bytes of the texts they come from (8 bytes
# per word against about 5 characters and a space).
SHINGLE_BYTES_PER_TEXT_BYTE = 1.5


def shingle_sets(texts: list[str | None], shingle_words: int) -> list[np.ndarray]:
    """Sorted distinct 64-bit shingle hashes of each text: the set MinHash summarizes."""
    hashes = word_hashes([words(normalize_text(t)) for t in texts])
    return [np.unique(shingle_hashes(h, shingle_words)) for h in hashes]


def jaccard_of_sets(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sorted distinct arrays (1.0 when both are empty, as in precision.py)."""
    both = len(np.intersect1d(a, b, assume_unique=True))
    union = len(a) + len(b) - both
    return both / union if union else 1.0


def uncertain(est: np.ndarray, threshold: float, margin: float) -> np.ndarray:
    """Pairs whose estimate is within ``margin`` of the threshold: these are checked exactly."""
    return np.abs(np.asarray(est, dtype=float) - threshold) <= margin


def triaged(batch: pd.DataFrame, threshold: float, margin: float, want_uncertain: bool) -> pd.DataFrame:
    """The certain edges decided by their estimate (``want_uncertain`` False), or the uncertain ones."""
    doubt = uncertain(batch["est_jaccard"].to_numpy(dtype=float), threshold, margin)
    if want_uncertain:
        return batch.loc[doubt, ["src", "dst", "src_rank", "dst_rank", "est_jaccard"]]
    kept = batch.loc[~doubt, ["src", "dst", "src_rank", "dst_rank", "est_jaccard"]]
    return kept.assign(exact_jaccard=np.nan, verified=kept["est_jaccard"].to_numpy(dtype=float) >= threshold)


def endpoint_rows(batch: pa.Table) -> pa.Table:
    """Two rows per uncertain pair, one keyed by each of its documents."""
    n = batch.num_rows
    pair = {
        c: pa.concat_arrays([batch.column(c).combine_chunks().cast(_ENDPOINTS.field(c).type)] * 2)
        for c in ("src", "dst", "src_rank", "dst_rank", "est_jaccard")
    }
    doc_id = pa.concat_arrays([batch.column("src").combine_chunks(), batch.column("dst").combine_chunks()])
    columns = {"doc_id": doc_id.cast(pa.string()), "text": pa.nulls(2 * n, pa.string()), **pair}
    columns[_IS_DOC] = pa.array(np.zeros(2 * n, dtype=bool))
    return pa.Table.from_pydict(columns, schema=_ENDPOINTS)


def document_rows(batch: pa.Table, id_column: str, text_column: str) -> pa.Table:
    """Each document as one row of the endpoint schema (its id and text; the pair columns null)."""
    n = batch.num_rows
    columns = {f.name: pa.nulls(n, f.type) for f in _ENDPOINTS}
    columns["doc_id"] = batch.column(id_column).combine_chunks().cast(pa.string())
    columns["text"] = batch.column(text_column).combine_chunks().cast(pa.string())
    columns[_IS_DOC] = pa.array(np.ones(n, dtype=bool))
    return pa.Table.from_pydict(columns, schema=_ENDPOINTS)


def attach_shingles(group: pd.DataFrame, shingle_words: int) -> pd.DataFrame:
    """One ``doc_id`` partition: every endpoint row with its document's shingle hashes (bytes).

    Only documents named by an endpoint are shingled, each once however many pairs it is in."""
    is_doc = group[_IS_DOC].astype(bool).to_numpy()
    ends = group.loc[~is_doc]
    docs = group.loc[is_doc & group["doc_id"].isin(ends["doc_id"]).to_numpy()].drop_duplicates("doc_id")
    sets = shingle_sets(docs["text"].tolist(), shingle_words)
    by_id = dict(zip(docs["doc_id"], (s.tobytes() for s in sets), strict=True))
    shingles = [by_id.get(d) for d in ends["doc_id"]]  # None: a document absent from the texts
    return pd.DataFrame(
        {
            _PAIR: (ends["src"] + "\x00" + ends["dst"]).to_numpy(),
            **{c: ends[c].to_numpy() for c in ("src", "dst", "src_rank", "dst_rank", "est_jaccard")},
            "shingles": shingles,
        }
    )


def pair_jaccard(group: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """One pair partition: each pair's exact Jaccard from its two endpoint rows, and the verdict.

    A pair missing a half (a document without text rows) is rejected: nothing shows it similar."""
    rows = []
    for _, pair in group.groupby(_PAIR, sort=True):
        halves = [np.frombuffer(s, dtype=np.uint64) for s in pair["shingles"] if s is not None]
        first = pair.iloc[0]
        exact = jaccard_of_sets(halves[0], halves[1]) if len(halves) == 2 else 0.0
        rows.append((first["src"], first["dst"], first["src_rank"], first["dst_rank"], first["est_jaccard"], exact))
    frame = pd.DataFrame(rows, columns=EDGE_COLUMNS[:-1])
    return frame.assign(verified=frame["exact_jaccard"].to_numpy(dtype=float) >= threshold)


def verify_in_one_partition(
    edges: pd.DataFrame, documents: pd.DataFrame, threshold: float, margin: float, shingle_words: int
) -> pd.DataFrame:
    """:func:`verify_edges` in one process, for a frame that is the whole input (every shuffle's
    partitions are then one): candidate edges and ``doc_id``/``text`` rows in, verified edges out."""
    certain = triaged(edges, threshold, margin, want_uncertain=False)
    doubtful = triaged(edges, threshold, margin, want_uncertain=True)
    if not len(doubtful):
        return certain
    ends = endpoint_rows(pa.Table.from_pandas(doubtful, preserve_index=False))
    docs = document_rows(pa.Table.from_pandas(documents[["doc_id", "text"]], preserve_index=False), "doc_id", "text")
    shingled = attach_shingles(pa.concat_tables([ends, docs]).to_pandas(), shingle_words)
    return pd.concat([certain, pair_jaccard(shingled, threshold)], ignore_index=True)


def verify_partitions(checked: int, documents: int, text_bytes: int, budget_mb: int, min_partitions: int | None) -> int:
    """Partitions for the two shuffles: the texts of the documents (first), and the shingle arrays of
    two endpoints per checked pair at the average document size (second), each within ``budget_mb``;
    no more than leave :data:`MIN_ROWS_PER_PARTITION` documents per partition (see there)."""
    shingle_bytes = 2 * checked * text_bytes / max(1, documents) * SHINGLE_BYTES_PER_TEXT_BYTE
    wanted = partitions_for(int(max(text_bytes, shingle_bytes)), budget_mb, min_partitions)
    return max(1, min(wanted, documents // MIN_ROWS_PER_PARTITION))


def verify_edges(
    edges: ray.data.Dataset,
    documents: ray.data.Dataset,
    threshold: float,
    margin: float,
    shingle_words: int,
    num_partitions: int | Callable[[int], int],
    id_column: str = "doc_id",
    text_column: str = "text",
) -> tuple[ray.data.Dataset, int]:
    """Candidate edges (``candidate_edges`` rows) with ``verified`` decided as the module says, and
    ``exact_jaccard`` where it was computed (NaN elsewhere); also the number of pairs checked exactly.

    ``documents`` holds at least the id and text of every document the edges name. ``edges``
    should be materialized (it is read twice). ``num_partitions`` may be a function of the number
    of pairs to check (:func:`verify_partitions`)."""
    certain = map_table(edges, triaged, batch_format="pandas", threshold=threshold, margin=margin, want_uncertain=False)
    doubtful = map_table(
        edges, triaged, batch_format="pandas", threshold=threshold, margin=margin, want_uncertain=True
    ).materialize()
    checked = doubtful.count()
    if not checked:
        return certain, 0
    if callable(num_partitions):
        num_partitions = num_partitions(checked)
    ends = map_table(doubtful, endpoint_rows)
    docs = map_table(
        documents.select_columns([id_column, text_column]), document_rows, id_column=id_column, text_column=text_column
    )
    shingled = partitioned_map(
        ends.union(docs), "doc_id", attach_shingles, num_partitions, fn_kwargs={"shingle_words": shingle_words}
    )
    pair_partitions = max(1, min(num_partitions, 2 * checked // MIN_ROWS_PER_PARTITION))
    exact = partitioned_map(shingled, _PAIR, pair_jaccard, pair_partitions, fn_kwargs={"threshold": threshold})
    return certain.union(exact), checked
