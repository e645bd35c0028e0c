"""Connected components of the near-duplicate graph, computed on the cluster with Ray Data.

Algorithm: alternating Large-Star and Small-Star (Kiveris et al., "Connected Components in
MapReduce and Beyond", SoCC 2014). Each step is one hash-partitioned pass over the edge list
grouped by node, so no process ever holds more than one partition of edges, and the edge count
never grows. Edges are stored as ``(hi, lo)`` with ``hi > lo``; ``m(u)`` is the smallest of ``u``
and its neighbours.

* Large-Star, grouped by every endpoint ``u``: each neighbour ``v > u`` is reconnected to
  ``m(u)``.
* Small-Star, grouped by the larger endpoint ``u``: ``u`` and its smaller neighbours are all
  connected to the smallest of them.

Both keep the components. When a round changes no edge, every node has either only larger
neighbours or exactly one smaller one and no larger: each component is a star whose centre is its
smallest node, and every other member has one edge to it. The clean phase names nodes by rank key
(:mod:`raypipe.dedup.survivor`), so that centre is the survivor under the rule: seeds, then
selected pages, then the rest, ties to the smallest ``doc_id``; deterministic on any cluster.
Rounds grow with the logarithm of the component diameter (squared, in the worst case), so a
chain of near duplicates needs several rounds; ``max_rounds`` turns a runaway into an error.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import ray.data

from raypipe.dedup.shuffle import partitioned_map
from raypipe.stage import map_table


def _edge_frame(hi: np.ndarray, lo: np.ndarray, changed: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame({"hi": hi, "lo": lo, "changed": changed.astype(np.int64)})
    return frame.groupby(["hi", "lo"], as_index=False, sort=False)["changed"].max()


def canonical_edges(batch: pd.DataFrame) -> pd.DataFrame:
    """``(src, dst)`` pairs as ``(hi, lo)`` with ``hi > lo``; self-loops dropped."""
    src, dst = batch["src"].to_numpy(dtype=object), batch["dst"].to_numpy(dtype=object)
    keep = src != dst
    src, dst = src[keep], dst[keep]
    hi = np.where(src > dst, src, dst)
    lo = np.where(src > dst, dst, src)
    return _edge_frame(hi, lo, np.zeros(len(hi), dtype=bool))


def _both_directions(batch: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "node": np.concatenate([batch["hi"].to_numpy(dtype=object), batch["lo"].to_numpy(dtype=object)]),
            "nbr": np.concatenate([batch["lo"].to_numpy(dtype=object), batch["hi"].to_numpy(dtype=object)]),
        }
    )


def large_star(batch: pd.DataFrame) -> pd.DataFrame:
    """Large-Star over ``(node, nbr)`` rows holding every neighbour of each node in the batch."""
    if batch.empty:
        return _edge_frame(np.empty(0, object), np.empty(0, object), np.empty(0, bool))
    node = batch["node"].to_numpy(dtype=object)
    nbr = batch["nbr"].to_numpy(dtype=object)
    smallest_nbr = batch.groupby("node", sort=False)["nbr"].transform("min").to_numpy(dtype=object)
    m = np.where(smallest_nbr < node, smallest_nbr, node)
    larger = nbr > node
    return _edge_frame(nbr[larger], m[larger], (m != node)[larger])


def small_star(batch: pd.DataFrame) -> pd.DataFrame:
    """Small-Star over ``(hi, lo, changed)`` rows holding every smaller neighbour of each ``hi``.

    An output edge is flagged ``changed`` when this step moved it, or when any input edge of its
    group was flagged (by the Large-Star before it), so one sum per round tells if the round
    changed anything.
    """
    if batch.empty:
        return _edge_frame(np.empty(0, object), np.empty(0, object), np.empty(0, bool))
    hi = batch["hi"].to_numpy(dtype=object)
    lo = batch["lo"].to_numpy(dtype=object)
    group = batch.groupby("hi", sort=False)
    m = group["lo"].transform("min").to_numpy(dtype=object)
    carried = group["changed"].transform("max").to_numpy(dtype=bool)
    moved = lo != m  # (lo, m) replaces (hi, lo)
    return _edge_frame(
        np.concatenate([hi, lo[moved]]),
        np.concatenate([m, m[moved]]),
        np.concatenate([carried, np.ones(int(moved.sum()), dtype=bool)]),
    )


def _labels(batch: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"doc_id": batch["hi"], "component": batch["lo"]})


def connected_components(edges: ray.data.Dataset, num_partitions: int, max_rounds: int) -> tuple[ray.data.Dataset, int]:
    """Components of an undirected graph given as ``(src, dst)`` rows.

    Returns ``(doc_id, component)`` for every node that is not its component's smallest node
    (the component id is that smallest node; a materialized dataset), and the number of rounds.
    Each round is one execution (two shuffles) and one sum of the change flags.
    """
    current = map_table(edges, canonical_edges, batch_format="pandas")
    for rounds in range(1, max_rounds + 1):
        both = map_table(current, _both_directions, batch_format="pandas")
        large = partitioned_map(both, "node", large_star, num_partitions)
        current = partitioned_map(large, "hi", small_star, num_partitions).materialize()
        if not current.count() or not current.sum("changed"):
            return map_table(current, _labels, batch_format="pandas").materialize(), rounds
    raise RuntimeError(f"connected components did not converge in {max_rounds} rounds (dedup.max_cc_rounds)")
