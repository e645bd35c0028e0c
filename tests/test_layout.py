"""The shard layout: a seeded global shuffle dealt into shards of a configured size."""

from __future__ import annotations

import numpy as np
import pandas as pd

from raypipe.shards.layout import shard_layout


def selection(n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    return pd.DataFrame(
        {
            "stream": rng.choice(["agent", "code", "text"], n),
            "doc_id": [f"doc-{i}" for i in range(n)],
            "n_tokens": rng.integers(2, 3000, n),
            "copies": rng.choice([1, 1, 1, 2, 3], n),
        }
    )


def test_every_copy_is_placed_once_in_shards_of_the_configured_size():
    sel = selection()
    layout = shard_layout(sel, tokens_per_shard=50_000, seed=1)
    assert len(layout) == sel["copies"].sum()
    assert not layout.duplicated(["stream", "doc_id", "copy"]).any()
    per_shard = layout.groupby("shard")["n_tokens"].sum()
    assert list(per_shard.index) == list(range(len(per_shard)))
    assert (per_shard.iloc[:-1] >= 50_000).all() and (per_shard.iloc[:-1] < 50_000 + 3000).all()
    for _, rows in layout.groupby("shard"):
        assert rows["sequence"].tolist() == list(range(len(rows)))
    # globally shuffled: streams interleave instead of arriving in input order
    assert layout["stream"].iloc[:30].nunique() == 3
    assert not layout["doc_id"].is_monotonic_increasing


def test_layout_depends_only_on_the_selection_and_the_seed():
    sel = selection()
    a = shard_layout(sel, 50_000, seed=1)
    b = shard_layout(sel.sample(frac=1.0, random_state=9).reset_index(drop=True), 50_000, seed=1)
    pd.testing.assert_frame_equal(a, b)
    c = shard_layout(sel, 50_000, seed=2)
    assert a["doc_id"].tolist() != c["doc_id"].tolist()
