"""Token-based mixing on the real shared data: ratio, up/down-sampling, Stage II, shortfalls, determinism."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raypipe.config import DatasetSourceConfig, MixConfig, StorageConfig, TokenizerConfig
from raypipe.mix import MixError, plan_mix
from raypipe.shards.tokenizer import TokenizeStage
from raypipe.streams import read_dataset_file

SEED = 1234


def load(uri: Path, stream: str, **kw) -> pd.DataFrame:
    src = DatasetSourceConfig(uri=str(uri), **kw)
    return pd.concat(list(read_dataset_file(str(uri), src, stream, StorageConfig())), ignore_index=True)


@pytest.fixture(scope="module")
def counted(shared_data: Path) -> pd.DataFrame:
    """Every real document of the three streams with its LLaMA-3 token count.

    agent = the PyPI library docs as seeds plus Gorilla's API docs (JSON records as text) standing in
    for retrieved web pages, each with a synthetic but fixed ``agent_score``.
    """
    seeds = load(shared_data / "seeds" / "api_docs_pypi" / "python_library_docs.jsonl.gz", "agent", name="seed:pypi")
    pages = pd.concat(
        [
            load(p, "agent", name="web", text_field=None)
            for p in sorted((shared_data / "seeds" / "gorilla_api_docs").glob("*.jsonl.gz"))
        ],
        ignore_index=True,
    )
    pages["agent_score"] = np.random.default_rng(0).uniform(0.5, 1.0, len(pages))
    code = load(shared_data / "mix" / "code" / "pypi_python_code.jsonl.gz", "code")
    text = pd.concat([load(p, "text") for p in sorted((shared_data / "mix" / "text").glob("*.gz"))], ignore_index=True)
    docs = pd.concat([seeds, pages, code, text], ignore_index=True)
    return TokenizeStage(TokenizerConfig())(docs).drop(columns=["text", "tokens"])


def tokens_by_stream(plan) -> dict[str, int]:
    sel = plan.selection
    return (sel["n_tokens"] * sel["copies"]).groupby(sel["stream"]).sum().to_dict()


def assert_ratio(plan, target: dict[str, float]) -> None:
    got = tokens_by_stream(plan)
    total = sum(got.values())
    for stream, share in target.items():
        assert abs(got[stream] / total - share) <= 0.01, (stream, got[stream] / total, share)
        assert plan.achieved_ratio[stream] == pytest.approx(got[stream] / total)


def test_stage1_one_to_one_to_one_within_a_point(counted, caplog):
    with caplog.at_level(logging.WARNING, logger="raypipe.mix"):
        plan = plan_mix(counted, MixConfig(), SEED)
    assert_ratio(plan, {"agent": 1 / 3, "code": 1 / 3, "text": 1 / 3})
    assert not plan.warnings and not caplog.records
    # the scarcest stream (text) is used whole, once; the others are downsampled
    text = counted[counted["stream"] == "text"]
    assert tokens_by_stream(plan)["text"] == text["n_tokens"].sum()
    assert (plan.selection["copies"] == 1).all()
    assert plan.streams["code"]["selected_documents"] < plan.streams["code"]["available_documents"]


def test_upsampling_repeats_whole_documents(counted):
    text_tokens = int(counted.loc[counted["stream"] == "text", "n_tokens"].sum())
    cfg = MixConfig(total_tokens=3 * int(2.5 * text_tokens), max_repeats=3)
    plan = plan_mix(counted, cfg, SEED)
    assert_ratio(plan, {"agent": 1 / 3, "code": 1 / 3, "text": 1 / 3})
    text = plan.selection[plan.selection["stream"] == "text"]
    assert len(text) == (counted["stream"] == "text").sum()
    assert set(text["copies"]) == {2, 3}
    assert plan.streams["text"]["sequences"] > plan.streams["text"]["selected_documents"]
    assert not plan.warnings


def test_stage2_seed_focused_takes_seeds_twice_then_the_best_pages(counted):
    cfg = MixConfig(ratio={"agent": 2, "code": 1, "text": 1}, score_ordered=["agent"], source_repeats={"seed:*": 2})
    plan = plan_mix(counted, cfg, SEED)
    assert_ratio(plan, {"agent": 0.5, "code": 0.25, "text": 0.25})
    agent = counted[counted["stream"] == "agent"].merge(plan.selection[["stream", "doc_id", "copies"]], how="left")
    agent["copies"] = agent["copies"].fillna(0)
    seeds, pages = agent[agent["source"] == "seed:pypi"], agent[agent["source"] == "web"]
    assert (seeds["copies"] == 2).all()
    taken = pages["copies"] > 0
    assert 0 < taken.sum() < len(pages)
    assert pages.nlargest(100, "agent_score")["copies"].eq(1).all()
    assert pages.loc[taken, "agent_score"].mean() > pages.loc[~taken, "agent_score"].mean() + 0.2


def test_shortfall_scale_keeps_the_ratio_and_says_so(counted, caplog):
    text_tokens = int(counted.loc[counted["stream"] == "text", "n_tokens"].sum())
    with caplog.at_level(logging.WARNING, logger="raypipe.mix"):
        plan = plan_mix(counted, MixConfig(total_tokens=3_000_000), SEED)
    assert len(plan.warnings) == 1
    warning = plan.warnings[0]
    assert f"stream 'text' has {text_tokens:,} tokens" in warning
    assert "needs 1,000,000" in warning and "scaled from 3,000,000 to" in warning
    assert caplog.records and caplog.records[0].getMessage() == warning
    assert_ratio(plan, {"agent": 1 / 3, "code": 1 / 3, "text": 1 / 3})
    assert plan.summary()["warnings"] == [warning]


def test_shortfall_keep_keeps_the_others_at_target(counted):
    plan = plan_mix(counted, MixConfig(total_tokens=1_500_000, on_shortfall="keep"), SEED)
    got = tokens_by_stream(plan)
    assert "on_shortfall=keep" in plan.warnings[0] and "'text'" in plan.warnings[0]
    assert got["text"] == counted.loc[counted["stream"] == "text", "n_tokens"].sum()
    assert abs(got["code"] - 500_000) < 2_000 and abs(got["agent"] - 500_000) < 2_000
    assert plan.achieved_ratio["text"] < 0.3


def test_plan_is_deterministic_and_seeded(counted):
    a = plan_mix(counted, MixConfig(), SEED).selection
    shuffled = counted.sample(frac=1.0, random_state=3)
    b = plan_mix(shuffled, MixConfig(), SEED).selection
    pd.testing.assert_frame_equal(a, b)
    c = plan_mix(counted, MixConfig(), SEED + 1).selection
    assert set(a.loc[a["stream"] == "code", "doc_id"]) != set(c.loc[c["stream"] == "code", "doc_id"])


def test_unmixable_inputs_are_clear_errors(counted):
    no_text = counted[counted["stream"] != "text"]
    with pytest.raises(MixError, match=r"nothing to mix: streams \['text'\] have no tokens"):
        plan_mix(no_text, MixConfig(), SEED)
    kept = plan_mix(no_text, MixConfig(on_shortfall="keep"), SEED)
    assert "stream 'text' has 0 tokens" in kept.warnings[0]
    with pytest.raises(MixError, match=r"streams \['other'\] have no share"):
        plan_mix(counted.assign(stream="other"), MixConfig(), SEED)
    with pytest.raises(MixError, match="duplicate"):
        plan_mix(pd.concat([counted, counted.head(2)]), MixConfig(), SEED)
