"""Which copy survives when documents are duplicates: the survivor rule of exact and near dedup.

The rule: **seeds first, then selected pages, then everything else; within a tier, the smallest
``doc_id``.** Why: a seed is the curated original that the agent stream is built around, so a web
page that copies it must go, never the seed (ids of seeds start with ``seed:``, which sorts after
the hex ids of pages, so "smallest id" alone dropped the seed). A page the classifier selected is
the copy that lands in the agent stream, so it beats an unselected copy that would only land in the
text stream. Ties go to the smallest ``doc_id`` so the choice depends only on the data, never on
the order rows arrive in or on the number of partitions.

The rule is carried by one sortable string per document, its *rank key*: the tier digit followed
by the ``doc_id``. The smallest rank key of a group is its survivor, so every dedup step that used
to take "the smallest ``doc_id``" takes the smallest rank key instead, with plain string order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SEED_PREFIX = "seed:"
SEED, SELECTED, OTHER = "0", "1", "2"


def rank_keys(doc_ids: pd.Series, selected: pd.Series | None = None) -> pd.Series:
    """The rank key of each document: ``0<doc_id>`` for seeds (ids starting with ``seed:``),
    ``1<doc_id>`` for selected pages, ``2<doc_id>`` for the rest."""
    ids = doc_ids.astype(str)
    chosen = np.zeros(len(ids), dtype=bool) if selected is None else selected.fillna(False).astype(bool).to_numpy()
    tier = np.where(ids.str.startswith(SEED_PREFIX).to_numpy(), SEED, np.where(chosen, SELECTED, OTHER))
    return pd.Series(tier, index=ids.index) + ids


def doc_ids_of(keys: pd.Series) -> pd.Series:
    """The ``doc_id`` inside each rank key (the key minus its one-character tier)."""
    return keys.astype(str).str.slice(1)


def order_column(batch: pd.DataFrame) -> str:
    """The column a dedup step sorts by to find survivors: ``rank_key`` where the rows carry one,
    else ``doc_id`` (every document in one tier)."""
    return "rank_key" if "rank_key" in batch.columns else "doc_id"
