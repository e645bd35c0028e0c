"""Training on the real shared data: splits, balance, determinism, held-out metrics and rounds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raypipe.classify.classifier import load_classifier, train_classifier
from raypipe.classify.model import agent_proba
from raypipe.classify.rounds import expanded_domains, next_positives, run_rounds, score_frame
from raypipe.classify.train import balance, held_out_seeds, seed_group, with_share
from raypipe.config import ClassifyConfig, SeedsConfig, StorageConfig
from raypipe.retrieve.evaluate import web_negatives
from raypipe.seeds import load_seeds
from raypipe.store.storage import OutputStore

# Small and fast, but the real pipeline code: only sizes differ from the defaults.
FAST = {
    "bucket": 100_000,
    "epoch": 8,
    "max_tokens": 300,
    "chunk_tokens": 150,
    "max_positives_per_source": 150,
    "calibration_size": 120,
    "mode": "fasttext_only",
}


@pytest.fixture(scope="module")
def seeds(shared_data: Path) -> pd.DataFrame:
    files = [
        "gorilla_api_docs/huggingface_api.jsonl.gz",
        "gorilla_api_docs/torchhub_api.jsonl.gz",
        "gorilla_apizoo/Zoom_API.json.gz",
        "gorilla_apizoo/Datadog_API.json.gz",
        "gorilla_apizoo/servicenow.json.gz",
        "gorilla_apizoo/Google_Drive_API.json.gz",
        "api_docs_pypi/python_library_docs.jsonl.gz",
        "function_calling/glaive_toolcall_en_demo.json.gz",
    ]
    cfg = SeedsConfig(sources=[str(shared_data / "seeds" / f) for f in files], harvest_modules=[])
    return load_seeds(cfg, StorageConfig())


@pytest.fixture(scope="module")
def pages(shared_data: Path) -> pd.DataFrame:
    """Real extracted web pages, C4 and Wikipedia: the crawl's page sample."""
    return web_negatives(shared_data).rename(columns={"id": "url"})[["url", "text"]]


def test_seed_groups_are_held_out_whole(seeds: pd.DataFrame) -> None:
    held = held_out_seeds(seeds, 0.2, seed=3)
    groups = pd.DataFrame(
        {"group": [seed_group(t, s) for t, s in zip(seeds["text"], seeds["source"], strict=True)], "held": held}
    )
    apizoo = groups[seeds["source"].to_numpy() == "gorilla_apizoo"]
    assert apizoo.groupby("group")["held"].nunique().max() == 1, "a REST provider straddles train and held-out"
    assert 0.05 < held.mean() < 0.4
    assert seed_group("Datadog API - Key Management: Get API key", "gorilla_apizoo") == "gorilla_apizoo:datadog"


def test_balance_equalizes_classes() -> None:
    pos, neg = balance([f"p{i}" for i in range(10)], [f"n{i}" for i in range(100)], seed=0)
    assert len(pos) == len(neg) == 40
    assert set(pos) == {f"p{i}" for i in range(10)}
    pos, neg = balance([f"p{i}" for i in range(100)], [f"n{i}" for i in range(30)], seed=0)
    assert len(pos) == len(neg) == 100


def test_page_positives_get_their_share_of_the_positives() -> None:
    pages = [f"page {i}" for i in range(20)]
    grown = with_share(pages, 700, 0.3)  # 300 of 1,000 positives: each page 15 times, capped at 10
    assert len(grown) == 200 and set(grown) == set(pages)
    assert len(with_share(pages, 140, 0.3)) == 60  # 60 of 200
    assert with_share(pages, 10, 0.3) == pages  # already more than the share: never cut
    assert with_share(pages, 700, 0.0) == pages and with_share([], 700, 0.3) == []


def test_train_classifier_reports_held_out_metrics(seeds: pd.DataFrame, pages: pd.DataFrame) -> None:
    cfg = ClassifyConfig(**FAST)
    trained = train_classifier(seeds, pages, cfg, seed=7)
    held = trained.metrics["held_out"]["fasttext_only"]["balanced"]
    assert held["tp"] + held["fn"] > 50 and held["fp"] + held["tn"] > 50
    assert held["f1"] > 0.85, held
    headline = trained.metrics["held_out"]["fasttext_only"]["at_prevalence"]
    assert set(headline) == {"p=0.01", "p=0.001"}
    low, high = headline["p=0.01"]["precision_ci95"]
    assert low <= headline["p=0.01"]["precision"] <= high
    assert headline["p=0.001"]["precision"] <= headline["p=0.01"]["precision"]
    assert 0 < trained.rule.ft_threshold < 1
    assert trained.rule.pass_threshold <= trained.rule.ft_threshold
    assert trained.metrics["counts"]["examples_pos_balanced"] == trained.metrics["counts"]["examples_neg_balanced"]
    # API documentation scores above news, as page text the model never saw
    doc = "Parameters\n• user_id (string, required): the user.\nReturns the user's profile.\nGET /v2/users/{user_id}"
    news = "The mayor said on Tuesday that the city council will vote on the new budget next month."
    agent = agent_proba(trained.model, [doc, news, ""], cfg.max_tokens)
    assert agent[0] > agent[1] and np.isnan(agent[2])


def test_training_is_deterministic(seeds: pd.DataFrame, pages: pd.DataFrame) -> None:
    cfg = ClassifyConfig(**{**FAST, "max_positives_per_source": 60, "epoch": 3})
    texts = pages["text"].head(20).tolist() + seeds["text"].head(20).tolist()
    first = train_classifier(seeds, pages, cfg, seed=11)
    second = train_classifier(seeds, pages, cfg, seed=11)
    assert first.rule == second.rule
    np.testing.assert_array_equal(
        agent_proba(first.model, texts, cfg.max_tokens), agent_proba(second.model, texts, cfg.max_tokens)
    )


def test_expanded_domains_needs_share_and_size() -> None:
    scored = pd.DataFrame(
        {
            "url": [f"https://www.docs.example/{i}" for i in range(6)]
            + [f"https://news.example/{i}" for i in range(6)]
            + ["https://tiny.example/a"],
            "selected": [True] * 5 + [False] + [True] + [False] * 5 + [True],
        }
    )
    assert expanded_domains(scored, share=0.8, min_pages=5) == ["docs.example"]
    assert expanded_domains(scored, share=0.8, min_pages=1) == ["docs.example", "tiny.example"]


def test_only_documentation_sites_expand_when_similarity_is_known() -> None:
    scored = pd.DataFrame(
        {
            "url": [f"https://docs.example/{i}" for i in range(6)] + [f"https://news.example/{i}" for i in range(6)],
            "text": ["page"] * 12,
            "selected": [True] + [False] * 5 + [True] + [False] * 5,  # a sixth of each selected
        }
    )
    cfg = ClassifyConfig(domain_expansion_share=0.1, domain_min_pages=5)
    extra, domains = next_positives(scored, cfg)
    assert domains == ["docs.example", "news.example"] and len(extra) == 12
    extra, domains = next_positives(scored, cfg, sites={"docs.example"})
    assert domains == ["docs.example"]
    assert sorted(extra["url"]) == sorted([f"https://docs.example/{i}" for i in range(6)] + ["https://news.example/0"])


def test_rounds_move_selected_pages_from_negatives_to_positives(
    seeds: pd.DataFrame, pages: pd.DataFrame, tmp_path: Path
) -> None:
    """Round 2 trains on what round 1 selected (and on its domains); both rounds are stored.

    The planted doc pages are the docs of every second library (by name), whose seeds are left out
    of training: pages about APIs the model never saw, as on a real crawl.
    """
    pypi = seeds["source"] == "api_docs_pypi"
    library = seeds["text"].str.split(n=1).str[0]
    unseen = pypi & library.isin(sorted(set(library[pypi]))[1::2])
    docs = seeds[unseen]
    train_seeds = seeds[~unseen]
    doc_pages = pd.DataFrame(
        {"url": [f"https://docs.example.org/{i}" for i in range(len(docs))], "text": docs["text"].to_numpy()}
    )
    scored_set = pd.concat([pages, doc_pages], ignore_index=True)
    cfg = ClassifyConfig(**{**FAST, "rounds": 2, "domain_expansion_share": 0.5, "domain_min_pages": 5})
    store = OutputStore(str(tmp_path / "out"), StorageConfig())
    selected_in_round_1: list[pd.DataFrame] = []

    def score(model_uri: str, rule: object) -> pd.DataFrame:
        scored = score_frame(scored_set, load_classifier(model_uri, StorageConfig()))
        selected_in_round_1.append(scored[scored["selected"]])
        return scored

    reports = run_rounds(train_seeds, pages, score, cfg, store, seed=5)
    assert [r.round for r in reports] == [1, 2] and len(selected_in_round_1) == 1
    first, second = reports
    chosen = selected_in_round_1[0]
    assert first.counts["selected_pages"] == len(chosen) > len(doc_pages) // 2
    assert first.counts["expanded_domains"] == ["docs.example.org"]
    assert second.counts["selected_before"] == first.counts["next_round_positives"] >= len(doc_pages)
    # selected sample pages stopped being negatives
    in_sample = int(chosen["url"].isin(set(pages["url"])).sum())
    assert second.counts["pages_train"] + second.counts["pages_held_out"] == len(pages) - in_sample
    assert store.exists("classifier/round-1/model.bin") and store.exists("classifier/round-2/metrics.json")
    assert second.model_uri.endswith("classifier/round-2/model.bin")
