"""Short leaks and function schemas: benchmark items shorter than the n-gram are matched whole as
phrases (the question, and the call in the answer), and benchmark-only function schemas are keys,
while anything the seed corpus contains never is. Real BFCL items planted in real page text."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd

from raypipe.clean.decontam import (
    BenchmarkItem,
    DecontamIndex,
    DecontamMatcher,
    _render_ground_truth,
    answer_calls,
    build_index,
    function_schemas,
)
from raypipe.config import DecontamConfig, SeedsConfig, StorageConfig
from raypipe.seeds import load_seeds
from tests.support.planted import base_texts, benchmark_index

BFCL = "bfcl_v4/BFCL_v4_simple_python.json.gz"


def bfcl_item(data: Path, item_id: str) -> tuple[dict, dict]:
    """(test record, possible answer) of one real BFCL v4 simple_python item."""

    def find(rel: str) -> dict:
        with gzip.open(data / "benchmarks" / rel, "rt") as f:
            return next(r for r in map(json.loads, f) if r["id"] == item_id)

    return find(BFCL), find(BFCL.replace("bfcl_v4/", "bfcl_v4/possible_answer/"))


def planted(page: str, snippet: str) -> str:
    middle = len(page) // 2
    return f"{page[:middle]}\n{snippet}\n{page[middle:]}"


def test_a_seven_word_bfcl_question_and_its_call_are_caught_inside_a_real_page(shared_data: Path) -> None:
    record, answer = bfcl_item(shared_data, "simple_python_298")
    question = record["question"][0][0]["content"]
    assert question == "What key signature does C# major have?"  # 7 words: no 13-gram can match it
    call = answer_calls((_render_ground_truth(answer["ground_truth"]),))[0]
    assert call.startswith("music_theory.key_signature(")
    page = base_texts(shared_data)[11][1]
    matcher = DecontamMatcher(benchmark_index(shared_data))
    got = matcher(pd.DataFrame({"text": [planted(page, question), planted(page, f"    {call}"), page]}))
    assert got["contaminated"].tolist() == [True, True, False]
    assert all("bfcl:simple_python_298" in items for items in got["contamination_items"][:2])


def test_short_phrases_are_bounded_below() -> None:
    """A phrase shorter than min_ngram words gives no key: 'hello' must not match every page."""
    items = [BenchmarkItem("bfcl", "tiny", questions=("Hello there",), answers=("greet()",))]
    index = DecontamIndex.build(items, DecontamConfig(benchmarks="unused"))
    assert len(index.hashes) == 0 and index.fields_too_short == 3  # question, call, answer text


def test_a_benchmark_only_function_schema_is_flagged_unless_the_seeds_hold_it(shared_data: Path) -> None:
    record, _ = bfcl_item(shared_data, "simple_python_9")
    schema = json.dumps(record["function"][0], indent=2)
    page = planted(base_texts(shared_data)[12][1], f"Example tool definition:\n```json\n{schema}\n```")
    index = benchmark_index(shared_data)
    got = DecontamMatcher(index)(pd.DataFrame({"text": [page]}))
    assert got["contaminated"][0] and "bfcl:simple_python_9" in got["contamination_items"][0]
    assert index.summary()["schema_keys"] > 0

    items = [BenchmarkItem("bfcl", "simple_python_9", schemas=function_schemas(record["function"]))]
    own = DecontamIndex.build(items, DecontamConfig(benchmarks="unused"))
    assert DecontamMatcher(own)(pd.DataFrame({"text": [page]}))["contaminated"][0]
    # the same schema published in the seed corpus is shared documentation, not a leak
    seeded = DecontamIndex.build(items, DecontamConfig(benchmarks="unused"), allowed=[schema])
    assert seeded.summary()["keys_removed_as_seen_in_seeds"] > 0
    assert not DecontamMatcher(seeded)(pd.DataFrame({"text": [page]}))["contaminated"][0]
    off = DecontamIndex.build(items, DecontamConfig(benchmarks="unused", schemas=False))
    assert not DecontamMatcher(off)(pd.DataFrame({"text": [page]}))["contaminated"][0]


def test_no_seed_document_is_flagged(shared_data: Path) -> None:
    """The seed corpus overlaps APIBench (PROVENANCE.md): keys found in the seeds are removed."""
    seeds = load_seeds(SeedsConfig(sources=[str(shared_data / "seeds")], harvest_modules=[]), StorageConfig())
    cfg = DecontamConfig(benchmarks=str(shared_data / "benchmarks"))
    index = build_index(cfg, StorageConfig(), allowed=seeds["text"])
    assert index.summary()["keys_removed_as_seen_in_seeds"] > 0
    flagged = DecontamMatcher(index)(seeds[["text"]])["contaminated"]
    assert not flagged.any()
    record, _ = bfcl_item(shared_data, "simple_python_298")
    page = planted(base_texts(shared_data)[11][1], record["question"][0][0]["content"])
    assert DecontamMatcher(index)(pd.DataFrame({"text": [page]}))["contaminated"][0]
