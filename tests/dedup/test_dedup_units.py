"""Dedup and decontamination building blocks, without Ray: each one checked on real text."""

from __future__ import annotations

import gzip
import json
import random

import numpy as np
import pandas as pd
import pytest

from raypipe.clean.decontam import DecontamMatcher
from raypipe.config import DedupConfig
from raypipe.dedup.components import canonical_edges, large_star, small_star
from raypipe.dedup.exact import exact_duplicates_in_partition
from raypipe.dedup.lsh import bucket_edges, bucket_rows, candidate_probability
from raypipe.dedup.minhash import DedupFingerprinter
from raypipe.dedup.normalize import normalize_text, text_hash
from raypipe.dedup.precision import exact_jaccard
from raypipe.dedup.verify import (
    jaccard_of_sets,
    shingle_sets,
    uncertain,
    verify_in_one_partition,
)
from tests.support.planted import (
    base_texts,
    benchmark_index,
    benchmark_questions,
    copies_around_threshold,
    mutate,
    seed_api_docs,
)


def test_normalization_ignores_case_spacing_and_composition_but_not_words() -> None:
    a = "Caf\u00e9 au lait\n\n  is   GOOD."
    b = "cafe\u0301 AU LAIT is good."
    assert normalize_text(a) == normalize_text(b) == "caf\u00e9 au lait is good."
    assert text_hash(normalize_text(a)) == text_hash(normalize_text(b))
    assert text_hash(normalize_text("cafe au lait is good")) != text_hash(normalize_text(a))


def test_exact_survivor_is_smallest_doc_id_whatever_the_order() -> None:
    rows = pd.DataFrame({"doc_id": ["d5", "d2", "d9", "d1", "d7"], "text_hash": ["h1", "h1", "h2", "h3", "h3"]})
    expected = {("d5", "d2"), ("d7", "d1")}
    for seed in range(3):
        shuffled = rows.sample(frac=1, random_state=seed)
        got = exact_duplicates_in_partition(shuffled)
        assert set(zip(got["doc_id"], got["duplicate_of"], strict=True)) == expected


def _fingerprints(texts: list[str], ids: list[str]) -> pd.DataFrame:
    return DedupFingerprinter(DedupConfig())(pd.DataFrame({"doc_id": ids, "text": texts}))


def test_near_copies_share_buckets_and_unrelated_pages_do_not(shared_data) -> None:
    rng = random.Random(3)
    texts = [t for _, t in base_texts(shared_data, min_words=400)[:40]]
    copy = mutate(texts[0], 0.01, rng)
    assert exact_jaccard(texts[0], copy, 5) > 0.85
    fp = _fingerprints([*texts, copy, ""], [f"d{i:03d}" for i in range(len(texts) + 2)])
    buckets = [set(b) for b in fp["lsh_buckets"]]
    assert buckets[0] & buckets[len(texts)]
    assert not any(buckets[i] & buckets[j] for i in range(len(texts)) for j in range(i + 1, len(texts)))
    assert buckets[-1] == set()  # no words, no buckets: never a near duplicate


def test_bucket_edges_are_verified_stars_to_the_smallest_member(shared_data) -> None:
    rng = random.Random(5)
    texts = [t for _, t in base_texts(shared_data, min_words=400)[:3]]
    near = mutate(texts[0], 0.01, rng)
    fp = _fingerprints([near, texts[0], texts[0], texts[1]], ["d3", "d1", "d0", "d2"])
    # one band row per document, all put in one bucket: only the near copy verifies against d0
    rows = bucket_rows(fp).drop_duplicates("doc_id").assign(bucket=np.uint64(7))
    edges = bucket_edges(rows, threshold=0.8, verify=True, collapse_exact=True)
    assert set(edges["dst"]) == {"d0"}  # d1 is d0's exact copy: not a member
    assert set(edges.loc[edges["verified"], "src"]) == {"d3"}
    assert set(edges["src"]) == {"d3", "d2"}
    unverified = bucket_edges(rows, threshold=0.8, verify=False, collapse_exact=False)
    assert set(unverified["src"]) == {"d1", "d2", "d3"} and unverified["verified"].all()


def test_s_curve_of_the_default_bands() -> None:
    cfg = DedupConfig()
    assert candidate_probability(0.7, cfg.bands, cfg.rows) > 0.99  # recall at the threshold
    assert candidate_probability(0.3, cfg.bands, cfg.rows) < 0.05  # few unrelated candidates to verify


def _local_components(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """Large-Star / Small-Star run to convergence in one process (the partitions are the whole graph)."""
    edges = canonical_edges(pd.DataFrame(pairs, columns=["src", "dst"]))
    for _ in range(20):
        both = pd.DataFrame(
            {"node": pd.concat([edges["hi"], edges["lo"]]), "nbr": pd.concat([edges["lo"], edges["hi"]])}
        )
        edges = small_star(large_star(both))
        if not edges["changed"].any():
            return dict(zip(edges["hi"], edges["lo"], strict=True))
    raise AssertionError("did not converge")


def test_star_steps_turn_chains_into_stars_centred_on_the_minimum() -> None:
    chain = ["n5", "n3", "n8", "n1", "n9", "n4", "n7"]
    pairs = list(zip(chain, chain[1:], strict=False)) + [("m2", "m0"), ("m0", "m1")]
    assert _local_components(pairs) == {
        **{n: "n1" for n in chain if n != "n1"},
        "m1": "m0",
        "m2": "m0",
    }


def test_exact_jaccard_of_shingles() -> None:
    assert exact_jaccard("a b c d e f", "a b c d e f", 5) == 1.0
    assert exact_jaccard("a b c d e f", "a b c d e g", 5) == 1 / 3


def test_index_catches_planted_questions_and_spares_seed_api_docs(shared_data) -> None:
    index = benchmark_index(shared_data)
    matcher = DecontamMatcher(index)
    page = base_texts(shared_data)[5][1]
    planted = [f"{page[:2000]}\n{question}\n{page[2000:]}" for _, question in benchmark_questions(shared_data).values()]
    hits = matcher(pd.DataFrame({"text": planted}))
    assert hits["contaminated"].all()
    for (name, (item, _)), benches, items in zip(
        benchmark_questions(shared_data).items(),
        hits["contamination_benchmarks"],
        hits["contamination_items"],
        strict=True,
    ):
        assert name in benches and f"{name}:{item}" in items
    # The Gorilla API docs overlap the APIBench eval items' embedded docs heavily (PROVENANCE.md);
    # none of that is a leak under the rule.
    docs = []
    for name in ("huggingface_api", "tensorflowhub_api", "torchhub_api"):
        with gzip.open(shared_data / f"seeds/gorilla_api_docs/{name}.jsonl.gz", "rt") as f:
            docs += [json.dumps(json.loads(line)) for line in f]
    docs += seed_api_docs(shared_data, 30)
    clean = matcher(pd.DataFrame({"text": docs + [page]}))
    assert not clean["contaminated"].any()
    assert clean["contamination_items"].map(len).sum() == 0


def test_exact_survivor_prefers_seeds_then_selected_pages() -> None:
    """Seed ids (``seed:...``) sort after hex page ids, so "smallest id" dropped seeds for their web copies."""
    from raypipe.dedup.survivor import rank_keys

    rows = pd.DataFrame(
        {
            "doc_id": ["0a1f", "seed:api-7", "00ff", "3c2e", "1b7d", "9e01"],
            "text_hash": ["seeded", "seeded", "seeded", "picked", "picked", "picked"],
            "selected": [True, True, False, True, False, True],
        }
    )
    rows["rank_key"] = rank_keys(rows["doc_id"], rows["selected"])
    for seed in range(3):
        got = exact_duplicates_in_partition(rows.sample(frac=1, random_state=seed)[["doc_id", "text_hash", "rank_key"]])
        # the seed beats both web copies; among pages, the selected ones win, the smaller id first
        assert dict(zip(got["doc_id"], got["duplicate_of"], strict=True)) == {
            "0a1f": "seed:api-7",
            "00ff": "seed:api-7",
            "1b7d": "3c2e",
            "9e01": "3c2e",
        }


def test_near_survivor_prefers_seeds_and_selected_pages(shared_data) -> None:
    from raypipe.dedup.survivor import doc_ids_of, rank_keys

    rng = random.Random(9)
    texts = [t for _, t in base_texts(shared_data, min_words=400)[:2]]
    frame = pd.DataFrame(
        {
            "doc_id": ["0001", "seed:doc", "0002", "0003"],
            "text": [mutate(texts[0], 0.01, rng), texts[0], mutate(texts[1], 0.01, rng), texts[1]],
            "selected": [False, True, False, True],
        }
    )
    fp = DedupFingerprinter(DedupConfig())(frame)
    fp["rank_key"] = rank_keys(fp["doc_id"], fp["selected"])
    rows = bucket_rows(fp)
    edges = pd.concat([bucket_edges(g, 0.8, True, True) for _, g in rows.groupby("bucket")])
    edges = edges[edges["verified"]].drop_duplicates(["src", "dst"])
    assert set(zip(edges["src"], edges["dst"], strict=True)) == {("0001", "seed:doc"), ("0002", "0003")}
    components = _local_components(list(zip(edges["src_rank"], edges["dst_rank"], strict=True)))
    survivors = {doc_ids_of(pd.Series([k]))[0]: doc_ids_of(pd.Series([v]))[0] for k, v in components.items()}
    assert survivors == {"0001": "seed:doc", "0002": "0003"}


def test_exact_verification_decides_the_pairs_the_estimate_misjudges(shared_data) -> None:
    """A copy just under the threshold whose estimate is above is not merged; one just over whose
    estimate is below is. Trusting the estimate (margin 0) gets both wrong."""
    text = next(t for _, t in base_texts(shared_data, min_words=500))
    under, over = copies_around_threshold(text, 0.7)
    other = base_texts(shared_data, min_words=500)[3][1]
    docs = pd.DataFrame({"doc_id": ["d0", "d1", "d2", "d3"], "text": [text, under, over, other]})
    rows = bucket_rows(_fingerprints(docs["text"].tolist(), docs["doc_id"].tolist()))
    edges = bucket_edges(rows.drop_duplicates("doc_id").assign(bucket=np.uint64(7)), 0.7, True, True)
    assert set(edges["src"]) == {"d1", "d2", "d3"} and set(edges["dst"]) == {"d0"}

    def merged(margin: float) -> set[str]:
        got = verify_in_one_partition(edges, docs.sample(frac=1, random_state=3), 0.7, margin, 5)
        assert sorted(got["src"]) == ["d1", "d2", "d3"]  # every candidate decided once
        return set(got.loc[got["verified"].astype(bool), "src"])

    assert merged(0.15) == {"d2"}
    assert merged(1.0) == {"d2"}
    assert merged(0.0) == {"d1"}  # the estimate alone: the error this replaces


def test_hashed_shingle_jaccard_is_the_exact_jaccard_of_the_texts(shared_data) -> None:
    rng = random.Random(4)
    texts = [t for _, t in base_texts(shared_data, min_words=300)[:6]]
    copies = [mutate(t, rng.uniform(0.0, 0.1), rng) for t in texts]
    sets = shingle_sets(texts + copies + ["", "too short"], 5)
    for i, (a, b) in enumerate(zip(texts, copies, strict=True)):
        assert jaccard_of_sets(sets[i], sets[i + len(texts)]) == pytest.approx(exact_jaccard(a, b, 5), abs=1e-12)
    assert jaccard_of_sets(sets[0], sets[1]) == pytest.approx(exact_jaccard(texts[0], texts[1], 5), abs=1e-12)
    assert len(sets[-2]) == 0 and len(sets[-1]) == 1  # no words: no shingle; fewer than 5: one


def test_only_estimates_near_the_threshold_are_checked_exactly() -> None:
    est = np.array([0.2, 0.54, 0.56, 0.7, 0.84, 0.86, 1.0])
    assert uncertain(est, 0.7, 0.15).tolist() == [False, False, True, True, True, False, False]
    assert uncertain(est, 0.7, 1.0).all() and uncertain(est, 0.7, 0.0).tolist() == [False] * 3 + [True] + [False] * 3
