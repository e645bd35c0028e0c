"""The clean phase end to end on a real local Ray cluster, over planted duplicates and leaks built
from ../shared/data: one survivor per cluster, the smallest doc_id; leaks dropped and reported
with their benchmark and item; clean pages and seed API docs kept; every row accounted for."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import ray
import ray.data

from raypipe.config import DedupConfig, RunConfig
from raypipe.dedup.components import connected_components
from raypipe.phases.clean import clean_documents
from raypipe.store.storage import OutputStore
from tests.support.planted import benchmark_index, max_cross_cluster_jaccard, planted_corpus

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cleaned(local_ray, shared_data: Path, tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    corpus = planted_corpus(shared_data, unique=30, exact_clusters=3, near_clusters=3)
    cfg = RunConfig(
        input="unused",
        output=str(tmp_path_factory.mktemp("clean")),
        decontam={"benchmarks": str(shared_data / "benchmarks")},
        dedup={"precision_sample": 50},
    )
    docs = corpus.drop(columns=["kind", "cluster", "benchmark", "item"])
    ds = ray.data.from_pandas([docs.iloc[i::3] for i in range(3)])  # three blocks, copies spread across them
    out, stats = clean_documents(ds, cfg, OutputStore(cfg.output, cfg.storage), index=benchmark_index(shared_data))
    result = out.to_pandas().set_index("doc_id")
    return corpus.set_index("doc_id"), result, stats


def test_every_row_is_returned_with_a_reason_or_kept(cleaned) -> None:
    corpus, result, stats = cleaned
    assert sorted(result.index) == sorted(corpus.index)
    assert stats["documents"] == len(corpus)
    assert stats["kept"] == int(result["drop_reason"].isna().sum())
    assert result.loc[corpus.index[corpus["kind"] == "dropped_earlier"], "drop_reason"].tolist() == ["quality"]


@pytest.mark.parametrize("kind,reason", [("exact", "duplicate_exact"), ("near", "duplicate_near")])
def test_one_survivor_per_cluster_the_smallest_doc_id(cleaned, kind: str, reason: str) -> None:
    corpus, result, stats = cleaned
    clusters = corpus[corpus["kind"] == kind].groupby("cluster")
    assert clusters.ngroups == 3
    for _, members in clusters:
        labels = result.loc[members.index]
        survivor = min(members.index)
        assert labels["drop_reason"].isna().tolist() == [d == survivor for d in labels.index]
        dropped = labels.drop(index=survivor)
        assert (dropped["drop_reason"] == reason).all()
        assert (dropped["duplicate_of"] == survivor).all()
    assert stats["dropped"][reason] == 6


def test_distinct_documents_are_never_merged(cleaned) -> None:
    corpus, result, _ = cleaned
    assert max_cross_cluster_jaccard(corpus[corpus["kind"].isin(["unique", "exact", "near"])], 5) < 0.5
    unique = corpus.index[corpus["kind"].isin(["unique", "seed_doc"])]
    assert result.loc[unique, "drop_reason"].isna().all()


def test_planted_benchmark_items_are_dropped_and_reported(cleaned) -> None:
    corpus, result, stats = cleaned
    leaks = corpus[corpus["kind"] == "leak"]
    assert len(leaks) == 5
    for doc_id, leak in leaks.iterrows():
        row = result.loc[doc_id]
        assert row["drop_reason"] == "contamination"
        assert leak["benchmark"] in list(row["contamination_benchmarks"])
        assert f"{leak['benchmark']}:{leak['item']}" in list(row["contamination_items"])
        reported = stats["contamination"]["benchmarks"][leak["benchmark"]]
        assert reported["documents"] >= 1 and reported["items"][leak["item"]] >= 1
    assert stats["dropped"]["contamination"] == 5
    seeds = corpus.index[corpus["kind"] == "seed_doc"]
    assert not result.loc[seeds, "contaminated"].any()


def test_precision_is_measured_against_exact_jaccard(cleaned) -> None:
    _, _, stats = cleaned
    near = stats["near_dedup"]
    assert near["verified_pairs"] >= 6
    precision = near["precision"]
    assert precision["kept"]["pairs"] >= 6
    assert precision["kept"]["precision"] >= 0.8
    assert precision["survivor_pairs"]["pairs"] == 6


def test_components_of_chains_take_several_rounds(local_ray) -> None:
    chain = ["n5", "n3", "n8", "n1", "n9", "n4", "n7", "n6", "n2"]
    pairs = list(zip(chain, chain[1:], strict=False)) + [("m2", "m0"), ("m0", "m1"), ("p1", "p0")]
    frame = pd.DataFrame(pairs, columns=["src", "dst"])
    edges = ray.data.from_pandas([frame.iloc[::2], frame.iloc[1::2]])
    labels, rounds = connected_components(edges, num_partitions=2, max_rounds=10)
    got = {r["doc_id"]: r["component"] for r in labels.take_all()}
    assert got == {**{n: "n1" for n in chain if n != "n1"}, "m1": "m0", "m2": "m0", "p1": "p0"}
    assert rounds >= 2
    with pytest.raises(RuntimeError, match="did not converge"):
        connected_components(edges, num_partitions=2, max_rounds=1)


def test_candidate_pairs_are_counted_once_whatever_the_partition_count(local_ray, shared_data: Path) -> None:
    """A pair met in several bands must not count once per partition its buckets fell in: near-dedup
    stats differed between a 1-CPU and a 2-CPU run before edges were regrouped by src."""
    from raypipe.dedup.lsh import candidate_edges
    from raypipe.dedup.minhash import DedupFingerprinter

    corpus = planted_corpus(shared_data, unique=10, exact_clusters=0, near_clusters=4)
    fingerprints = DedupFingerprinter(DedupConfig())(corpus[["doc_id", "text"]])
    columns = ["doc_id", "text_hash", "lsh_buckets", "minhash_sketch"]
    ds = ray.data.from_pandas(fingerprints[columns])
    runs = [candidate_edges(ds, 0.8, True, n).to_pandas() for n in (1, 2, 5)]
    pairs = [sorted(zip(r["src"], r["dst"], strict=True)) for r in runs]
    assert pairs[0] and pairs[0] == pairs[1] == pairs[2]
    assert len(pairs[0]) == len(set(pairs[0]))


def test_seeds_then_selected_pages_survive(local_ray, shared_data: Path, tmp_path) -> None:
    """A seed copied on the web keeps the seed; a selected page beats its unselected copies (exact
    and near), on a real local Ray."""
    import random

    from tests.support.planted import base_texts, mutate

    rng = random.Random(4)
    seed_text, page_text, other = [t for _, t in base_texts(shared_data, min_words=400)[40:43]]
    rows = [
        ("seed:gorilla:12", seed_text, True),
        ("0c11", seed_text, False),  # exact web copy of the seed, smaller id
        ("0c12", mutate(seed_text, 0.01, rng), True),  # near copy, even selected
        ("7f00", page_text, True),  # the selected page
        ("0001", page_text, False),  # unselected exact copy, smaller id
        ("0002", mutate(page_text, 0.01, rng), False),  # unselected near copy, smaller id
        ("5555", other, False),
    ]
    frame = pd.DataFrame(rows, columns=["doc_id", "text", "selected"]).assign(url="u", stream="agent")
    expected = {
        "0c11": ("duplicate_exact", "seed:gorilla:12"),
        "0c12": ("duplicate_near", "seed:gorilla:12"),
        "0001": ("duplicate_exact", "7f00"),
        "0002": ("duplicate_near", "7f00"),
    }
    # One shuffle partition: on inputs this small a partition gets no rows, and Ray's hash-shuffle
    # reduce then fails (ArrowInvalid: no _partition column). Order independence: test_dedup_units.
    for partitions in (1,):
        cfg = RunConfig(
            input="unused",
            output=str(tmp_path / f"p{partitions}"),
            decontam={"enabled": False},
            dedup={"min_partitions": partitions, "precision_sample": 0},
        )
        ds = ray.data.from_pandas([frame.iloc[i::3] for i in range(3)])
        out, _ = clean_documents(ds, cfg, OutputStore(cfg.output, cfg.storage))
        result = out.to_pandas().set_index("doc_id")
        dropped = result[result["drop_reason"].notna()]
        assert {d: (r["drop_reason"], r["duplicate_of"]) for d, r in dropped.iterrows()} == expected


def test_code_and_text_datasets_go_through_the_clean_phase(local_ray, shared_data: Path, tmp_path) -> None:
    """A benchmark answer inside a code file, or a question inside a text dataset, is dropped: the
    code and text streams skipped decontamination before. Seeds and clean files are kept."""
    import gzip
    import io
    import json

    from raypipe.phases.clean import run as run_clean_phase
    from raypipe.store.parts import CLEAN, SCORED, read_parts
    from raypipe.store.state import RunState
    from tests.support.planted import base_texts, benchmark_questions

    with gzip.open(shared_data / "mix" / "code" / "pypi_python_code.jsonl.gz", "rt") as f:
        code = [json.loads(line) for _, line in zip(range(4), f, strict=False)]
    question = benchmark_questions(shared_data)["bfcl"][1]
    code[1]["text"] += f'\n\nPROMPT = """{question}"""\n'
    (tmp_path / "code" / "python").mkdir(parents=True)
    with gzip.open(tmp_path / "code" / "python" / "part-0.jsonl.gz", "wt") as out:
        out.writelines(json.dumps(r) + "\n" for r in code)
    texts = [t for _, t in base_texts(shared_data)[60:63]]
    texts[2] = texts[2][:500] + " " + benchmark_questions(shared_data)["toolbench"][1] + " " + texts[2][500:]
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "t.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    cfg = RunConfig(
        input="unused",
        output=str(tmp_path / "out"),
        decontam={"benchmarks": str(shared_data / "benchmarks")},
        dedup={"precision_sample": 0, "min_partitions": 1},  # 9 rows: see test_seeds_then_selected_pages_survive
        mix={"code": {"uri": str(tmp_path / "code")}, "text": {"uri": str(tmp_path / "text")}},
    )
    store = OutputStore(cfg.output, cfg.storage)
    page = base_texts(shared_data)[70][1]
    scored = pd.DataFrame(
        {
            "doc_id": ["p1"],
            "url": ["https://example.org/p1"],
            "text": [page],
            "selected": [True],
            "stream": ["agent"],  # the score phase's verdict
            "drop_reason": [None],
        }
    )
    buf = io.BytesIO()
    scored.to_parquet(buf)
    store.write_bytes(f"{SCORED}/part-0.parquet", buf.getvalue())
    seeds = pd.DataFrame(
        {"id": ["s1"], "text": [base_texts(shared_data)[71][1]], "source": ["docs"], "license": ["MIT"]}
    )
    buf = io.BytesIO()
    seeds.to_parquet(buf)
    store.write_bytes(f"{cfg.retrieve.index_dir}/seeds.parquet", buf.getvalue())

    summary = run_clean_phase(cfg, store, RunState(store))
    docs = read_parts(store, CLEAN).to_pandas().set_index("doc_id")
    assert summary["documents"] == len(docs) == 1 + 1 + 4 + 3
    assert docs.loc["python/part-0:1", "drop_reason"] == "contamination"
    assert docs.loc["t:2", "drop_reason"] == "contamination"
    kept = docs[docs["drop_reason"].isna()]
    assert sorted(kept.index) == [
        "p1",
        "python/part-0:0",
        "python/part-0:2",
        "python/part-0:3",
        "seed:s1",
        "t:0",
        "t:1",
    ]
    assert set(kept.loc[["python/part-0:0", "t:0"], "stream"]) == {"code", "text"}


def test_pairs_the_estimate_misjudges_are_decided_by_exact_jaccard(local_ray, shared_data: Path, tmp_path) -> None:
    """A copy at exact Jaccard just under 0.7 whose MinHash estimate is above is kept, one just over
    whose estimate is below is dropped: by the clean phase and by ``near_duplicates``, on any
    number of partitions (the exact check runs in two shuffles on the workers)."""
    from raypipe.dedup.near import near_duplicates
    from tests.support.planted import base_texts, copies_around_threshold

    texts = [t for _, t in base_texts(shared_data, min_words=500)]
    under, over = copies_around_threshold(texts[0], 0.7)
    others = texts[5:17]
    frame = pd.DataFrame(
        {
            "doc_id": ["a0", "a1", "a2"] + [f"o{i:02d}" for i in range(len(others))],
            "text": [texts[0], under, over, *others],
        }
    )
    ds = ray.data.from_pandas([frame.iloc[i::3] for i in range(3)])
    for partitions in (3,):
        labels = near_duplicates(ds, DedupConfig(), num_partitions=partitions).to_pandas()
        assert dict(zip(labels["doc_id"], labels["duplicate_of"], strict=True)) == {"a2": "a0"}

    cfg = RunConfig(
        input="unused",
        output=str(tmp_path),
        decontam={"enabled": False},
        dedup={"precision_sample": 20, "min_partitions": 1},
    )
    docs = frame.assign(url="https://example.org/" + frame["doc_id"], stream="text", drop_reason=None)
    out, stats = clean_documents(
        ray.data.from_pandas([docs.iloc[i::3] for i in range(3)]), cfg, OutputStore(cfg.output, cfg.storage)
    )
    result = out.to_pandas().set_index("doc_id")
    dropped = result[result["drop_reason"].notna()]
    assert {d: (r["drop_reason"], r["duplicate_of"]) for d, r in dropped.iterrows()} == {"a2": ("duplicate_near", "a0")}
    near = stats["near_dedup"]
    assert near["exact_checked_pairs"] >= 2 and near["verified_pairs"] == 1
    assert near["precision"]["kept"]["precision"] == 1.0
