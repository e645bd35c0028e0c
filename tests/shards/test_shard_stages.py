"""The shard phase's stages without Ray: input normalisation, selection columns, the tokenizer stage
and the bucket writer (content-named shard, its documents/ part, one summary row)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from raypipe.config import MixConfig, ShardsConfig, StorageConfig, TokenizerConfig
from raypipe.mix import NOT_SELECTED, Generation, selection_columns
from raypipe.shards.inputs import INPUT_SCHEMA, NormalizeStream, pick
from raypipe.shards.tokenizer import TokenizeDocs, load_tokenizer
from raypipe.shards.writer import write_bucket
from raypipe.store.megatron import parse_index
from raypipe.store.storage import OutputStore


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


def docs(texts: list[str], stream: str = "code", sources: list[str] | None = None) -> pa.Table:
    frame = pd.DataFrame(
        {"doc_id": [f"d{i}" for i in range(len(texts))], "url": "u", "text": texts, "source": sources or "s"}
    )
    return NormalizeStream(stream)(frame)


def test_selection_columns_are_per_document_and_empty_texts_are_never_selected():
    table = docs(["some code", "", "more code here", "x"], sources=["seed:a", "web", "web", "seed:b"])
    cfg = MixConfig(source_repeats={"seed:*": 2})
    out = selection_columns(table, "code", cfg, 7)
    assert out.column("n_bytes").to_pylist() == [9, 0, 14, 1]
    assert out.column("unit").to_pylist() == [2, 1, 1, 2]
    key = out.column("key").to_pylist()
    assert key[1] == NOT_SELECTED and all(0 <= k < 1 for i, k in enumerate(key) if i != 1)
    # the key of a document is its own: the same alone, in another batch, in another order
    alone = selection_columns(table.slice(2, 1), "code", cfg, 7)
    assert alone.column("key")[0].as_py() == key[2]
    assert selection_columns(table, "code", cfg, 8).column("key").to_pylist() != key

    scores = pa.array([None, 0.2, 0.9, 0.5], pa.float64())
    scored = table.set_column(table.schema.get_field_index("agent_score"), "agent_score", scores)
    ranked = selection_columns(scored, "agent", MixConfig(score_ordered=["agent"]), 7).column("key").to_pylist()
    assert ranked[0] < ranked[2] < ranked[3] < 1  # no score (a seed) first, then the best score


CODE = ["def f(): pass", "import os", "print('hi')"]


def test_the_writer_names_a_shard_by_its_documents_and_writes_its_index(tmp_path):
    tokenizer = load_tokenizer(TokenizerConfig())
    stage = TokenizeDocs(TokenizerConfig(), None, actors=1)
    stage.setup()
    table = selection_columns(docs(CODE), "code", MixConfig(), 3)
    picked = pick(table, "code", 0, Generation(0.0, NOT_SELECTED, {1: 1}))
    assert set(picked.column("shard_key").to_pylist()) == {"code/0/1/0"}
    tokenized = stage.run(picked).drop_columns(["text"])
    expected = dict(zip(["d0", "d1", "d2"], tokenizer.encode_documents(CODE), strict=True))
    assert tokenized.column("n_tokens").to_pylist() == [len(d) for d in expected.values()]

    summary = write_bucket(tokenized, str(tmp_path), StorageConfig(), ShardsConfig(), "int32", 0).to_pylist()[0]
    again = write_bucket(tokenized.take([2, 0, 1]), str(tmp_path), StorageConfig(), ShardsConfig(), "int32", 0)
    assert again.to_pylist() == [summary]  # a retried task in another order writes the same file
    assert summary["path"].startswith("shards/code/forge_") and summary["documents"] == 3
    assert summary["text_bytes"] == sum(len(t) for t in CODE)
    store = OutputStore(str(tmp_path), StorageConfig())
    lengths = parse_index(store.read_bytes(summary["path"] + ".idx")).lengths.tolist()
    index = pq.read_table(tmp_path / ("documents/" + summary["path"].removeprefix("shards/") + ".parquet")).to_pandas()
    assert index["tokens"].tolist() == lengths and sum(lengths) == summary["tokens"]
    assert index["sequence"].tolist() == [0, 1, 2] and set(index["shard"]) == {summary["path"]}
    by_hash = table.to_pandas().sort_values("bucket_hash")["doc_id"].tolist()
    assert index["doc_id"].tolist() == by_hash  # documents in bucket-hash order, a seeded shuffle
    data = np.frombuffer((tmp_path / (summary["path"] + ".bin")).read_bytes(), dtype="<i4")
    assert data.tolist() == np.concatenate([expected[d] for d in by_hash]).tolist()
    assert json.loads(summary["sources"]) == {"s": {"documents": 3, "tokens": sum(lengths), "licenses": []}}

    subset = write_bucket(tokenized.slice(0, 2), str(tmp_path), StorageConfig(), ShardsConfig(), "int32", 0)
    assert subset.column("path")[0].as_py() != summary["path"]


def test_tokenizer_pool_leaves_a_whole_cpu_for_the_tasks():
    from raypipe.stage import actor_cpus

    assert actor_cpus(0.5, 2, 2.0) == 0.5
    assert actor_cpus(0.5, 1, 1.0) == 0.0  # a 1-CPU Ray: the actor reserves nothing
    assert actor_cpus(0.5, 4, 2.0) == 0.25
