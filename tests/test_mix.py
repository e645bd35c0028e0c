"""Choosing what ships on the real shared data, without Ray: hash-sampled thresholds from byte
histograms, the measured correction, score order and repeat factors, shortfalls, blend weights."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from raypipe.config import DatasetSourceConfig, MixConfig, StorageConfig, TokenizerConfig
from raypipe.mix import (
    FIRST_GENERATION,
    KeyHistogram,
    MixError,
    MixPlan,
    blend_weights,
    mix_data_path,
    parse_ratio,
    realized_shares,
    selection_columns,
    units_of,
)
from raypipe.shards.inputs import INPUT_SCHEMA, NormalizeStream
from raypipe.shards.tokenizer import TokenizeStage
from raypipe.streams import read_dataset_file

SEED = 1234
TOKENS_PER_SHARD = 200_000


def load(uri: Path, stream: str, **kw) -> pd.DataFrame:
    src = DatasetSourceConfig(uri=str(uri), **kw)
    return pd.concat(list(read_dataset_file(str(uri), src, stream, StorageConfig())), ignore_index=True)


@pytest.fixture(scope="module")
def counted(shared_data: Path) -> dict[str, pd.DataFrame]:
    """Every real document of the three streams in the phase's schema, with its LLaMA-3 token count.

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
    out = {}
    for name, frame in {"agent": pd.concat([seeds, pages], ignore_index=True), "code": code, "text": text}.items():
        norm = NormalizeStream(name)(frame).to_pandas()
        norm["n_tokens"] = TokenizeStage(TokenizerConfig())(norm.copy())["n_tokens"]
        out[name] = norm
    return out


def keyed(counted: dict[str, pd.DataFrame], cfg: MixConfig, seed: int = SEED) -> dict[str, pd.DataFrame]:
    """The selection columns the workers add, per stream."""
    out = {}
    for name, frame in counted.items():
        table = pa.Table.from_pandas(frame.drop(columns=["n_tokens"]), schema=INPUT_SCHEMA, preserve_index=False)
        keys = selection_columns(table, name, cfg, seed).to_pandas()
        keys["n_tokens"] = frame["n_tokens"].to_numpy()
        out[name] = keys
    return out


def plan_for(docs: dict[str, pd.DataFrame], cfg: MixConfig) -> MixPlan:
    """The plan from the histogram aggregation, run here on one block (the workers' partials add up)."""
    agg = KeyHistogram(sorted(docs), units_of(cfg))
    frame = pd.concat(list(docs.values()), ignore_index=True)[["stream", "key", "n_bytes", "unit"]]
    half = len(frame) // 2
    parts = [agg.aggregate_block(pa.Table.from_pandas(p, preserve_index=False)) for p in (frame[:half], frame[half:])]
    return MixPlan(cfg, agg.split(agg.combine(*parts)), TOKENS_PER_SHARD)


def ship(docs: dict[str, pd.DataFrame], plan: MixPlan) -> dict[str, pd.DataFrame]:
    """What the phase writes, generation by generation, measuring the rate in between."""
    chosen: dict[str, list[pd.DataFrame]] = {s: [] for s in docs}
    for first in (True, False):
        for name, span in plan.generation(first).items():
            rows = docs[name]
            chosen[name].append(rows[(rows["key"] >= span.lo) & (rows["key"] < span.hi)])
        for name, parts in chosen.items():
            if parts:
                got = pd.concat(parts)
                plan.measure(name, int(got["n_tokens"].sum()), int(got["n_bytes"].sum()))
    return {s: pd.concat(p) if p else docs[s].iloc[:0] for s, p in chosen.items()}


def weighted(rows: pd.DataFrame) -> int:
    return int((rows["n_tokens"] * rows["unit"]).sum())


def near(got: float, target: float, docs: pd.DataFrame) -> bool:
    """At most 3% short of the target (the second generation tops up), and over it by at most 3%
    plus one document: a hash sample takes whole documents, and the real code stream holds single
    files of over 100k tokens (a third of its target here)."""
    return -0.03 * target <= got - target <= 0.03 * target + int((docs["n_tokens"] * docs["unit"]).max())


def shards_of(shipped: dict[str, pd.DataFrame]) -> list[dict]:
    """One pseudo-shard per (stream, repeat factor), enough for the weights."""
    return [
        {"path": f"shards/{s}/{u}", "stream": s, "repeat": int(u), "tokens": int(g["n_tokens"].sum())}
        for s, rows in sorted(shipped.items())
        for u, g in rows.groupby("unit")
    ]


def test_stage1_ships_the_scarce_stream_whole_and_about_the_target_of_the_others(counted, caplog):
    cfg = MixConfig()
    docs = keyed(counted, cfg)
    plan = plan_for(docs, cfg)
    with caplog.at_level(logging.WARNING, logger="raypipe.mix"):
        shipped = ship(docs, plan)
        summary = plan.summary({}, {})
    text_tokens = int(counted["text"]["n_tokens"].sum())
    assert weighted(shipped["text"]) == text_tokens  # the scarcest stream: every document, once
    targets, _, _ = plan.targets()
    assert targets["text"] == pytest.approx(text_tokens)
    for stream in ("agent", "code"):
        got = weighted(shipped[stream])
        assert near(got, text_tokens, docs[stream]), (stream, got, text_tokens)
        assert len(shipped[stream]) < len(docs[stream])
    assert not [w for w in summary["warnings"] if "shortfall" in w] and not caplog.records

    shards = shards_of(shipped)
    shares = realized_shares(shards, blend_weights(shards, plan.shares()))
    for stream in ("agent", "code", "text"):
        assert shares[stream] == pytest.approx(1 / 3, abs=1e-9)


def test_the_first_generation_measures_the_rate_and_the_second_tops_up(counted):
    cfg = MixConfig()
    docs = keyed(counted, cfg)
    plan = plan_for(docs, cfg)
    first = plan.generation(first=True)
    code = docs["code"]
    span = first["code"]
    in_first = code[(code["key"] >= span.lo) & (code["key"] < span.hi)]
    assert span.lo == 0 and in_first["n_bytes"].sum() < FIRST_GENERATION * 1.05 * plan.ship()["code"] / 0.25
    plan.measure("code", int(in_first["n_tokens"].sum()), int(in_first["n_bytes"].sum()))
    measured = in_first["n_tokens"].sum() / in_first["n_bytes"].sum()
    assert plan.tokens_per_byte["code"] == pytest.approx(measured) and measured != pytest.approx(0.25, abs=0.01)
    second = plan.generation(first=False)
    assert second["code"].lo == span.hi < second["code"].hi  # the next keys, never a document twice
    assert plan.generation(first=False) == {}


def test_stage2_takes_seeds_first_and_twice_then_the_best_pages(counted):
    cfg = MixConfig(ratio={"agent": 2, "code": 1, "text": 1}, score_ordered=["agent"], source_repeats={"seed:*": 2})
    docs = keyed(counted, cfg)
    plan = plan_for(docs, cfg)
    shipped = ship(docs, plan)
    agent = docs["agent"].assign(taken=docs["agent"]["doc_id"].isin(shipped["agent"]["doc_id"]))
    seeds, pages = agent[agent["source"] == "seed:pypi"], agent[agent["source"] == "web"]
    assert seeds["taken"].all() and (seeds["unit"] == 2).all() and (pages["unit"] == 1).all()
    assert 0 < pages["taken"].sum() < len(pages)
    assert pages.nlargest(100, "agent_score")["taken"].all()
    assert pages.loc[pages["taken"], "agent_score"].mean() > pages.loc[~pages["taken"], "agent_score"].mean() + 0.2
    assert near(weighted(shipped["agent"]), plan.targets()[0]["agent"], docs["agent"])

    shards = shards_of(shipped)
    weights = blend_weights(shards, plan.shares())
    shares = realized_shares(shards, weights)
    assert shares["agent"] == pytest.approx(0.5) and shares["code"] == pytest.approx(0.25)
    by_path = dict(zip([s["path"] for s in shards], weights, strict=True))
    seed_tokens = int(shipped["agent"].loc[shipped["agent"]["unit"] == 2, "n_tokens"].sum())
    page_tokens = int(shipped["agent"].loc[shipped["agent"]["unit"] == 1, "n_tokens"].sum())
    # a seed token is drawn twice as often as a page token
    assert by_path["shards/agent/2"] / seed_tokens == pytest.approx(2 * by_path["shards/agent/1"] / page_tokens)


def test_shortfall_scale_keeps_the_ratio_and_says_so(counted, caplog):
    cfg = MixConfig(total_tokens=3_000_000)
    docs = keyed(counted, cfg)
    plan = plan_for(docs, cfg)
    ship(docs, plan)
    with caplog.at_level(logging.WARNING, logger="raypipe.mix"):
        summary = plan.summary({}, {})
    text_tokens = int(counted["text"]["n_tokens"].sum())
    (warning,) = [w for w in summary["warnings"] if "shortfall" in w]
    assert f"stream 'text' has {text_tokens:,} tokens" in warning
    assert "needs 1,000,000" in warning and "scaled from 3,000,000 to" in warning
    assert any(r.getMessage() == warning for r in caplog.records)
    assert plan.shares() == pytest.approx({"agent": 1 / 3, "code": 1 / 3, "text": 1 / 3})
    assert summary["total_tokens"] == pytest.approx(3 * text_tokens, rel=1e-6)


def test_shortfall_keep_keeps_the_others_at_target(counted):
    cfg = MixConfig(total_tokens=1_500_000, on_shortfall="keep")
    docs = keyed(counted, cfg)
    plan = plan_for(docs, cfg)
    shipped = ship(docs, plan)
    summary = plan.summary({}, {})
    text_tokens = int(counted["text"]["n_tokens"].sum())
    assert any("on_shortfall=keep" in w and "'text'" in w for w in summary["warnings"])
    assert weighted(shipped["text"]) == text_tokens
    for stream in ("agent", "code"):
        assert near(weighted(shipped[stream]), 500_000, docs[stream])
    assert plan.shares()["text"] < 0.3


def test_selection_depends_only_on_the_documents_and_the_seed(counted):
    cfg = MixConfig()
    a = keyed(counted, cfg)
    shuffled = {s: f.sample(frac=1.0, random_state=3).reset_index(drop=True) for s, f in counted.items()}
    b = keyed(shuffled, cfg)
    sa, sb = ship(a, plan_for(a, cfg)), ship(b, plan_for(b, cfg))
    assert set(sa["code"]["doc_id"]) == set(sb["code"]["doc_id"])
    c = keyed(counted, cfg, seed=SEED + 1)
    assert set(ship(c, plan_for(c, cfg))["code"]["doc_id"]) != set(sa["code"]["doc_id"])


def test_unmixable_inputs_are_clear_errors(counted):
    cfg = MixConfig()
    docs = keyed(counted, cfg)
    no_text = {s: f for s, f in docs.items() if s != "text"}
    with pytest.raises(MixError, match=r"nothing to mix: streams \['text'\] have no tokens"):
        plan_for(no_text, cfg).targets()
    kept = plan_for(no_text, MixConfig(on_shortfall="keep"))
    ship(no_text, kept)
    assert any("stream 'text' has 0 tokens" in w for w in kept.summary({}, {})["warnings"])
    with pytest.raises(MixError, match=r"streams \['other'\] have no share"):
        plan_for({"other": docs["code"]}, cfg)
    with pytest.raises(MixError, match="stream=share pairs"):
        parse_ratio("agent=1,code")
    with pytest.raises(MixError, match="no stream a positive share"):
        parse_ratio("agent=0")
    manifest = {"totals": {"tokens_by_stream": {"code": 1}}, "shards": [{"path": "p", "stream": "code", "tokens": 1}]}
    with pytest.raises(MixError, match=r"streams \['agent'\] are not in this output"):
        mix_data_path(manifest, {"agent": 1.0})
    assert mix_data_path(manifest, parse_ratio("code=3"), root="/data/run") == "1 /data/run/p"


def test_mix_command_needs_a_finished_output_and_a_valid_ratio(tmp_path, capsys):
    from raypipe.cli import main

    assert main(["mix", str(tmp_path), "--ratio", "agent=1"]) == 1
    assert "no manifest.json" in capsys.readouterr().err
    code = {"path": "shards/code/a", "stream": "code", "tokens": 300}
    shards = [code, {"path": "shards/text/b", "stream": "text", "tokens": 100}]
    manifest = {"totals": {"tokens_by_stream": {"code": 300, "text": 100}}, "shards": shards}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert main(["mix", str(tmp_path), "--ratio", "code=1,text=3"]) == 0
    assert capsys.readouterr().out.split() == ["0.25", "shards/code/a", "0.75", "shards/text/b"]
    assert main(["mix", str(tmp_path), "--ratio", "code=one"]) == 2
    assert "stream=share pairs" in capsys.readouterr().err
