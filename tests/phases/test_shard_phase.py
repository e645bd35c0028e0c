"""Phase 4 end to end on real Ray and real data: Megatron reads every shard, megatron-core's blended
dataset draws the streams at the target ratio and at a swept one from the same shards, runs are
deterministic, and on a real S3 server every write is atomic and the manifest names exactly what is there."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset

from raypipe.cli import main as raypipe_main
from raypipe.config import DatasetSourceConfig, RunConfig, StorageConfig, TokenizerConfig
from raypipe.phases.shard import run_shard
from raypipe.shards.tokenizer import llama3_model_path, load_tokenizer
from raypipe.store.storage import OutputStore
from raypipe.streams import configured_streams, read_dataset_file
from tests.support.megatron_blend import blended_shares

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]
FUNNEL = {"crawl": {"in": 881, "out": 412}, "dedup": {"in": 412, "out": 390}}


@pytest.fixture(scope="module")
def ray_cluster(s3_server):
    """A local Ray whose workers see the S3 server's endpoint and credentials, as a cluster's would."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": s3_server.env})
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def frame(path: Path, stream: str, limit: int | None = None, **kw) -> pd.DataFrame:
    src = DatasetSourceConfig(uri=str(path), **kw)
    docs = pd.concat(list(read_dataset_file(str(path), src, stream, StorageConfig())), ignore_index=True)
    return docs.head(limit) if limit else docs


@pytest.fixture(scope="module")
def streams(shared_data: Path) -> dict[str, pd.DataFrame]:
    """agent: seed docs with scores as the lead passes them; code: 300 files; text: C4 + Wikipedia."""
    agent = frame(shared_data / "seeds" / "api_docs_pypi" / "python_library_docs.jsonl.gz", "agent", name="seed")
    agent["seed_similarity"] = np.linspace(0.5, 1.0, len(agent))
    code = frame(shared_data / "mix" / "code" / "pypi_python_code.jsonl.gz", "code", limit=300, url_field="path")
    text = pd.concat([frame(p, "text") for p in sorted((shared_data / "mix" / "text").glob("*.gz"))])
    return {"agent": agent, "code": code, "text": text.reset_index(drop=True)}


def config(output: str, **overrides) -> RunConfig:
    return RunConfig.model_validate(
        {"input": "unused", "output": output, "shards": {"tokens_per_shard": 150_000}, **overrides}
    )


def read_index(store: OutputStore) -> pd.DataFrame:
    parts = [pq.read_table(io.BytesIO(store.read_bytes(k))).to_pandas() for k in store.list("documents")]
    return pd.concat(parts, ignore_index=True).sort_values(["shard", "sequence"], ignore_index=True)


def first_config(output: str, **overrides) -> RunConfig:
    """1.2M tokens at 1:1:1: agent and text hold less than 400k each, so both ship whole and are drawn twice."""
    return config(output, mix={"total_tokens": 1_200_000, "max_repeats": 2}, **overrides)


@pytest.fixture(scope="module")
def first_run(ray_cluster, streams, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("first") / "out"
    cfg = first_config(str(out))
    return run_shard(streams, cfg, OutputStore(cfg.output, cfg.storage), FUNNEL), out


def test_megatron_reads_every_shard_and_the_tokens_are_the_documents(first_run, streams):
    manifest, out = first_run
    cfg = first_config(str(out))
    store = OutputStore(cfg.output, cfg.storage)

    assert json.loads(store.read_bytes("manifest.json")) == manifest
    assert manifest["funnel"] == FUNNEL and manifest["config_hash"] == cfg.config_hash()
    assert manifest["tokenizer"]["eos_id"] == 128_001 and manifest["tokenizer"]["dtype"] == "int32"
    assert len(manifest["shards"]) >= 4
    assert not store.list("_tmp")
    assert not manifest["mix"]["warnings"]
    for shard in manifest["shards"]:
        assert shard["path"].startswith(f"shards/{shard['stream']}/forge_")
    streams_info = manifest["mix"]["streams"]
    for stream in ("agent", "text"):  # short streams ship whole and are drawn more than once
        counts = streams_info[stream]
        assert counts["documents"] == counts["available_documents"] - counts["empty_documents"]
        assert 1.0 < counts["epochs"] <= 2.0
    code = streams_info["code"]  # the long stream ships about its target, chosen before tokenizing
    assert code["documents"] < code["available_documents"]
    assert abs(code["tokens"] - code["target_tokens"]) < 0.1 * code["target_tokens"]
    assert code["tokens"] < 0.5 * code["available_tokens"]

    texts = {(s, d): t for s, df in streams.items() for d, t in zip(df["doc_id"], df["text"], strict=True)}
    index = read_index(store)
    tokenizer = load_tokenizer(TokenizerConfig())
    assert {"seed_similarity", "url", "stream", "tokens", "shard"} <= set(index.columns)
    assert index.loc[index["stream"] == "agent", "seed_similarity"].notna().all()
    assert not index.duplicated(["stream", "doc_id"]).any()
    total_docs = 0
    for shard in manifest["shards"]:
        ds = IndexedDataset(str(out / shard["path"]))
        rows = index[index["shard"] == shard["path"]].sort_values("sequence")
        assert len(ds) == shard["documents"] == len(rows)
        assert set(rows["stream"]) == {shard["stream"]}
        assert int(ds.sequence_lengths.sum()) == shard["tokens"] == sum(shard["tokens_by_stream"].values())
        data = (out / shard["bin"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard["sha256"]
        keys = zip(rows["stream"], rows["doc_id"], strict=True)
        expected = tokenizer.encode_documents([texts[key] for key in keys])
        for i, doc in enumerate(expected):
            assert np.array_equal(ds[i], doc)
        total_docs += len(ds)
    assert total_docs == manifest["totals"]["documents"] == len(index)
    assert manifest["totals"]["tokens"] == int(index["tokens"].sum())

    datasheet = store.read_bytes("README.md").decode()
    assert f"{manifest['totals']['tokens']:,} tokens" in datasheet
    assert "--data-path " + manifest["mix"]["data_path"] in datasheet
    assert "| code | pypi_python_code |" in datasheet


def test_megatron_blends_one_tokenization_at_the_target_and_a_swept_ratio(first_run, capsys):
    """megatron-core's BlendedMegatronDatasetBuilder + GPTDataset over the manifest's --data-path
    draws 1:1:1 within a point, and the same shards drawn by ``raypipe mix --ratio`` give 2:1:1."""
    manifest, out = first_run
    stream_of = {s["path"]: s["stream"] for s in manifest["shards"]}
    for stream, share in manifest["mix"]["achieved_ratio"].items():
        assert abs(share - 1 / 3) <= 1e-6, stream
    drawn = blended_shares(out, manifest["mix"]["data_path"], stream_of)
    for stream in ("agent", "code", "text"):
        assert abs(drawn[stream] - 1 / 3) <= 0.01, drawn

    assert raypipe_main(["mix", str(out), "--ratio", "agent=2,code=1,text=1"]) == 0
    swept = capsys.readouterr().out.strip()
    assert swept != manifest["mix"]["data_path"]
    drawn = blended_shares(out, swept, stream_of)
    assert abs(drawn["agent"] - 0.5) <= 0.01 and abs(drawn["code"] - 0.25) <= 0.01, drawn
    assert abs(drawn["text"] - 0.25) <= 0.01, drawn


def test_same_input_gives_identical_shards_on_other_worker_counts_and_orders(first_run, streams, tmp_path):
    import ray

    first, first_out = first_run
    shuffled = {
        name: ray.data.from_pandas(df.sample(frac=1.0, random_state=7)).repartition(5)
        for name, df in reversed(streams.items())
    }
    cfg = first_config(
        str(tmp_path / "b"),
        tokenizer={"max_actors": 1, "batch_size": 33},
        shards={"tokens_per_shard": 150_000, "writer_tasks": 1},
    )
    second = run_shard(shuffled, cfg, OutputStore(cfg.output, cfg.storage), FUNNEL)
    assert [s["sha256"] for s in first["shards"]] == [s["sha256"] for s in second["shards"]]
    assert first["config_hash"] != second["config_hash"]
    assert {**first, "config_hash": None} == {**second, "config_hash": None}
    pd.testing.assert_frame_equal(
        read_index(OutputStore(str(first_out), StorageConfig())), read_index(OutputStore(cfg.output, cfg.storage))
    )


def test_on_s3_writes_are_atomic_and_a_rerun_replaces_the_previous_output(
    ray_cluster, streams, s3_server, s3_env, shared_data, tmp_path
):
    s3_server.create_bucket("raypipe-shards")
    code_file = tmp_path / "code.jsonl.gz"
    with gzip.open(shared_data / "mix" / "code" / "pypi_python_code.jsonl.gz", "rt") as src:
        lines = [line for _, line in zip(range(200), src, strict=False)]
    with gzip.open(code_file, "wt") as out:
        out.writelines(lines)
    s3_server.upload_file(code_file, "raypipe-shards", "datasets/code/part-0.jsonl.gz")
    s3_server.upload_file(Path(str(llama3_model_path())), "raypipe-shards", "tokenizers/llama3.tiktoken")
    cfg = config(
        "s3://raypipe-shards/runs/r1",
        shards={"tokens_per_shard": 10_000_000},
        mix={"code": {"uri": "s3://raypipe-shards/datasets/code/"}},
        tokenizer={"kind": "tiktoken", "path": "s3://raypipe-shards/tokenizers/llama3.tiktoken"},
    )
    inputs = {"agent": streams["agent"], "text": streams["text"], **configured_streams(cfg.mix, cfg.storage)}
    store = OutputStore(cfg.output, cfg.storage)
    stale_files = (
        "manifest.json",
        "shards/forge_00007.bin",
        "shards/code/forge_0.idx",
        "documents/code/forge_0.parquet",
    )
    for stale in stale_files:
        store.write_text(stale, "from an earlier run")
    manifest = run_shard(inputs, cfg, store, {})

    keys = store.list("")
    paths = [s["path"] for s in manifest["shards"]]
    assert {p.rsplit("/", 1)[0] for p in paths} == {"shards/agent", "shards/code", "shards/text"}
    expected = ["README.md", "manifest.json"]
    for p in paths:
        expected += [f"{p}.bin", f"{p}.idx", "documents/" + p.removeprefix("shards/") + ".parquet"]
    assert keys == sorted(expected)
    local = tmp_path / "fetched"
    local.mkdir()
    for shard in manifest["shards"]:
        name = shard["path"].replace("/", "_")
        for ext in ("bin", "idx"):
            (local / f"{name}.{ext}").write_bytes(store.read_bytes(f"{shard['path']}.{ext}"))
        ds = IndexedDataset(str(local / name))
        assert len(ds) == shard["documents"]
        assert hashlib.sha256((local / f"{name}.bin").read_bytes()).hexdigest() == shard["sha256"]
    assert manifest["tokenizer"]["sha256"] == load_tokenizer(TokenizerConfig()).sha256
    sources = {s["source"]: s for s in manifest["sources"]}
    assert sources["part-0"]["stream"] == "code" and sources["part-0"]["licenses"]
