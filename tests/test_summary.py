"""Worker-side summaries: partials merged on the driver equal the summary of all rows at once, and
what reaches the driver is bounded by batches, not documents."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd
import pyarrow as pa
import ray

from raypipe.classify.reservoir import merge_sample, sample_blocks
from raypipe.summary import merge_score_partials, misra_gries, score_partial, score_summary


def scored(n: int = 3000, seed: int = 3) -> pa.Table:
    rng = np.random.default_rng(seed)
    selected = rng.random(n) < 0.05
    reasons = np.where(selected, None, rng.choice(["language", "low_agent_score", "quality:too_short"], n))
    sim = np.where(rng.random(n) < 0.3, rng.uniform(-0.1, 0.95, n), np.nan)
    hosts = rng.choice(["docs.a.org", "www.b.com", "c.net", *[f"h{i}.io" for i in range(50)]], n, p=None)
    stream = np.where(selected, "agent", np.where(reasons == "low_agent_score", "text", None))
    return pa.table(
        {
            "url": [f"https://{h}/p{i}" for i, h in enumerate(hosts)],
            "selected": selected,
            "stream": pa.array(stream.tolist(), pa.string()),
            "drop_reason": pa.array(reasons.tolist(), pa.string()),
            "seed_similarity": pa.array([None if np.isnan(v) else v for v in sim], pa.float64()),
            "agent_score": rng.uniform(0, 1, n),
        }
    )


def test_partials_merge_to_the_whole_tables_summary() -> None:
    table = scored()
    whole = merge_score_partials([json.loads(score_partial(table)["partial"][0].as_py())], {})
    parts = [json.loads(score_partial(table.slice(i, 250))["partial"][0].as_py()) for i in range(0, 3000, 250)]
    merged = merge_score_partials(parts, {"agent_score": 0.5})
    assert merged["pages"] == whole["pages"] == 3000
    assert merged["selected"] == whole["selected"] == int(np.sum(table["selected"].to_numpy()))
    assert merged["drop_reasons"] == whole["drop_reasons"] == {"low_agent_score": int(np.sum(stream_is(table, "text")))}
    assert merged["histograms"]["agent_score"]["counts"] == whole["histograms"]["agent_score"]["counts"]
    assert sum(merged["histograms"]["agent_score"]["counts"]) == 3000
    assert merged["histograms"]["agent_score"]["threshold"] == 0.5
    assert merged["embedded"] == int(table["seed_similarity"].is_valid().to_numpy(zero_copy_only=False).sum())
    frame = table.to_pandas()
    exact = Counter(frame.loc[frame["selected"], "url"].str.extract(r"//(?:www\.)?([^/]+)")[0])
    assert merged["top_domains"] == dict(exact.most_common(20))


def stream_is(table: pa.Table, name: str) -> np.ndarray:
    return np.array([s == name for s in table.column("stream").to_pylist()])


def test_misra_gries_keeps_heavy_hitters_in_bounded_space() -> None:
    counts = Counter({"big": 500, "mid": 120, **{f"tail{i}": 1 for i in range(1000)}})
    cut = misra_gries(counts, capacity=50)
    assert len(cut) <= 50 and list(cut)[:2] == ["big", "mid"]
    assert counts["big"] - cut["big"] <= sum(counts.values()) / 50


def test_score_summary_on_ray_reads_one_row_per_batch(local_ray) -> None:
    table = scored()
    ds = ray.data.from_arrow([table.slice(i, 500) for i in range(0, 3000, 500)])
    got = score_summary(ds, {})
    whole = merge_score_partials([json.loads(score_partial(table)["partial"][0].as_py())], {})
    assert got == whole


def test_bounded_sample_equals_the_unbounded_one(local_ray) -> None:
    pages = pd.DataFrame(
        {"url": [f"https://x.org/{i}" for i in range(4000)], "text": [f"page {i}" for i in range(4000)]}
    )
    pages["drop_reason"] = None
    ds = ray.data.from_pandas([pages.iloc[i : i + 400] for i in range(0, 4000, 400)])
    unbounded = merge_sample(sample_blocks(ds, 100, seed=7))
    assert len(unbounded) == 100
    bounded = sample_blocks(ds, 100, seed=7, population=4000)
    assert sum(ray.get(r).num_rows for r in bounded.refs) < 200  # bounded in total, not 100 per block
    pd.testing.assert_frame_equal(unbounded, merge_sample(bounded))
    # a wrong (too large) population lets too few through: the merge says so, the caller draws again
    assert merge_sample(sample_blocks(ds, 100, seed=7, population=4_000_000)) is None
    # a population between k and k + 6 sqrt(k) + 10 needs no cutoff (its share once overflowed uint64)
    pd.testing.assert_frame_equal(unbounded, merge_sample(sample_blocks(ds, 100, seed=7, population=150)))
