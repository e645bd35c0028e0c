"""Buckets and shard names: documents dealt evenly by hash, shards named by their documents."""

from __future__ import annotations

import numpy as np

from raypipe.shards.layout import bucket_keys, documents_key, shard_name


def test_buckets_are_even_per_repeat_factor_and_depend_only_on_the_document():
    rng = np.random.default_rng(5)
    units = rng.choice([1, 2], 20_000, p=[0.9, 0.1])
    hashes = rng.random(20_000)
    keys = np.asarray(bucket_keys("agent", 1, units, hashes, {1: 8, 2: 2}).to_pylist())
    assert set(keys[units == 2]) == {"agent/1/2/0", "agent/1/2/1"}
    counts = np.unique(keys[units == 1], return_counts=True)[1]
    assert len(counts) == 8 and counts.min() > 0.9 * counts.mean()
    order = rng.permutation(20_000)
    assert bucket_keys("agent", 1, units[order], hashes[order], {1: 8, 2: 2}).to_pylist() == keys[order].tolist()
    assert bucket_keys("agent", 1, np.array([1]), np.array([0.999999]), {1: 3}).to_pylist() == ["agent/1/1/2"]


def test_shard_names_come_from_the_documents_whatever_their_order():
    a = shard_name("forge", "code", ["x:1", "x:2", "y:7"])
    assert a == shard_name("forge", "code", ["y:7", "x:1", "x:2"])
    assert a.startswith("shards/code/forge_") and len(a.rsplit("_", 1)[1]) == 16
    assert a != shard_name("forge", "code", ["x:1", "x:2"])
    assert documents_key(a) == "documents/code/" + a.rsplit("/", 1)[1] + ".parquet"
