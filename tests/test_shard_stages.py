"""The shard phase's stages without Ray: input normalisation, the layout join and the shard writer."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from raypipe.config import ShardsConfig, StorageConfig
from raypipe.shards.megatron import parse_index
from raypipe.shards.phase import INPUT_SCHEMA, NormalizeStream, attach_layout, write_shard_group
from raypipe.storage import OutputStore


def test_streams_are_brought_to_one_schema_whatever_the_caller_sends():
    batch = pd.DataFrame(
        {
            "doc_id": [7, 8],
            "url": ["https://a.example/x", None],
            "text": pd.Series(["fine", json.loads('"a lone \\ud800 surrogate"')], dtype=object),
            "stream": ["wrong", "wrong"],
            "license": [float("nan"), "MIT"],
            "agent_score": ["0.5", None],
            "extra": [1, 2],
        }
    )
    table = NormalizeStream("agent")(batch)
    assert table.schema == INPUT_SCHEMA
    rows = table.to_pylist()
    assert [r["doc_id"] for r in rows] == ["7", "8"]
    assert {r["stream"] for r in rows} == {"agent"}
    assert rows[1]["text"] == "a lone \ufffd surrogate"
    assert rows[0]["license"] is None and rows[0]["agent_score"] == 0.5 and rows[1]["seed_similarity"] is None


def test_layout_join_gives_one_row_per_copy_and_the_writer_keeps_planned_order(tmp_path):
    tokens = [np.array([5, 6, 1], dtype=np.int32), np.array([9, 1], dtype=np.int32), np.array([1], dtype=np.int32)]
    batch = pd.DataFrame({"stream": ["code"] * 3, "doc_id": ["a", "b", "c"], "n_tokens": [3, 2, 1], "tokens": tokens})
    layout = pd.DataFrame(
        {
            "stream": ["code"] * 3,
            "doc_id": ["a", "b", "a"],
            "copy": [0, 0, 1],
            "n_tokens": [3, 2, 3],
            "shard": [0, 0, 0],
            "sequence": [2, 0, 1],
        }
    )
    joined = attach_layout(batch, layout)
    assert len(joined) == 3 and set(joined.columns) == {"shard", "sequence", "n_tokens", "tokens"}

    shuffled = joined.sample(frac=1.0, random_state=1)
    out = write_shard_group(shuffled, str(tmp_path), StorageConfig(), ShardsConfig(), "int32")
    assert out.iloc[0][["shard", "path", "documents", "tokens"]].tolist() == [0, "shards/forge_00000", 3, 8]
    data = np.frombuffer((tmp_path / "shards" / "forge_00000.bin").read_bytes(), dtype="<i4")
    assert data.tolist() == [9, 1, 5, 6, 1, 5, 6, 1]
    store = OutputStore(str(tmp_path), StorageConfig())
    assert parse_index(store.read_bytes("shards/forge_00000.idx")).lengths.tolist() == [2, 3, 3]

    with pytest.raises(ValueError, match="sequences are not 0..1"):
        write_shard_group(joined.iloc[:2], str(tmp_path), StorageConfig(), ShardsConfig(), "int32")


def test_tokenizer_pool_leaves_a_whole_cpu_for_the_tasks():
    from raypipe.stage import actor_cpus

    assert actor_cpus(0.5, 2, 2.0) == 0.5
    assert actor_cpus(0.5, 1, 1.0) == 0.0  # a 1-CPU Ray: the actor reserves nothing
    assert actor_cpus(0.5, 4, 2.0) == 0.25
