"""Threshold choice and the selection rule: every page not selected is accounted for."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raypipe.classify.rule import LOW_AGENT_SCORE, LOW_SEED_SIMILARITY, NO_TEXT, SelectionRule, fit_rule
from raypipe.classify.thresholds import (
    at_prevalence,
    f1_threshold,
    fpr_threshold,
    precision_at,
    prevalence_threshold,
    prf,
    recall_threshold,
    wilson_interval,
)


def test_f1_threshold_separates_separable_scores() -> None:
    pos = np.array([0.6, 0.7, 0.9])
    neg = np.array([0.1, 0.2, 0.5])
    t = f1_threshold(pos, neg)
    assert 0.5 < t <= 0.6
    assert prf(pos, neg, t) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}


def test_f1_threshold_is_balanced_against_sample_sizes() -> None:
    """Ten times more negatives must not move the threshold: both classes weigh the same."""
    rng = np.random.default_rng(0)
    pos = rng.normal(0.7, 0.1, 500)
    neg = rng.normal(0.4, 0.1, 500)
    small = f1_threshold(pos, neg)
    big = f1_threshold(pos, np.tile(neg, 10))
    assert abs(small - big) < 1e-9


def test_recall_threshold_keeps_the_target_share() -> None:
    pos = np.linspace(0.01, 1.0, 100)
    t = recall_threshold(pos, 0.98)
    assert (pos >= t).mean() >= 0.98
    assert (pos >= np.nextafter(t, 1)).mean() < 0.98


def test_fit_rule_cascade_gate_spends_the_embedding_budget() -> None:
    rng = np.random.default_rng(1)
    pos_agent = rng.beta(8, 2, 400)
    neg_agent = rng.beta(2, 8, 2000)
    neg_similarity = rng.normal(0.35, 0.08, 2000)
    rule = fit_rule(
        "cascade",
        pos_agent,
        neg_agent,
        embed_fraction=0.08,
        similarity_weight=0.3,
        prevalence=0.01,
        neg_similarity=neg_similarity,
    )
    embedded = (neg_agent >= rule.pass_threshold).mean()
    assert 0.08 - 1 / len(neg_agent) <= embedded <= 0.08 + 1 / len(neg_agent)
    assert rule.pass_threshold <= rule.ft_threshold
    # the combined rule passes as many held-out negatives as fastText alone does, and no fewer
    negatives = pd.DataFrame({"agent_score": neg_agent, "seed_similarity": neg_similarity})
    combined = rule.with_mode("embed_all").combined(neg_agent, neg_similarity)
    budget = int((neg_agent >= rule.ft_threshold).sum())
    assert int(rule.with_mode("embed_all").apply(negatives)["selected"].sum()) == budget
    assert (combined >= np.sort(combined)[::-1][budget]).sum() > budget
    # the combined rule sees both signals: it beats fastText alone on these overlapping scores
    frame_pos = pd.DataFrame({"agent_score": pos_agent, "seed_similarity": rng.normal(0.6, 0.08, 400)})
    assert rule.with_mode("embed_all").apply(frame_pos)["selected"].mean() > 0.9


def test_fpr_threshold_passes_at_most_the_share() -> None:
    neg = np.array([0.1, 0.4, 0.2, 0.9, 0.3, 0.8, 0.5, 0.7, 0.6, 0.0])
    assert (neg >= fpr_threshold(neg, 0.2)).sum() == 2
    assert (neg >= fpr_threshold(neg, 0.25)).sum() == 2
    assert (neg >= fpr_threshold(neg, 0.0)).sum() == 0
    assert (neg >= fpr_threshold(neg, 1.0)).sum() == 10


def test_threshold_falls_as_prevalence_rises() -> None:
    """Rarer positives make each false positive costlier: the threshold never falls with prevalence."""
    rng = np.random.default_rng(4)
    for pos, neg in [
        (rng.normal(1.5, 1.0, 600), rng.normal(0.0, 1.0, 6000)),
        (rng.beta(5, 2, 300), rng.beta(2, 5, 4000)),
        (rng.normal(2.5, 0.6, 400), rng.normal(0.0, 1.3, 8000)),
    ]:
        thresholds = [prevalence_threshold(pos, neg, p) for p in (0.001, 0.01, 0.05, 0.2, 0.5)]
        assert all(a >= b for a, b in zip(thresholds, thresholds[1:], strict=False)), thresholds
        assert thresholds[0] > thresholds[-1]
    assert prevalence_threshold(pos, neg, 0.5) == f1_threshold(pos, neg)


def test_prevalence_threshold_maximizes_the_crawl_f1() -> None:
    rng = np.random.default_rng(5)
    pos, neg = rng.normal(2.0, 1.0, 500), rng.normal(0.0, 1.0, 5000)
    t = prevalence_threshold(pos, neg, 0.01)

    def crawl_f1(th: float) -> float:
        r, f = (pos >= th).mean(), (neg >= th).mean()
        return 2 * r * 0.01 / (r * 0.01 + 0.01 + f * 0.99)

    assert all(crawl_f1(t) >= crawl_f1(th) - 1e-12 for th in np.concatenate([pos, neg]))


def test_precision_at_prevalence_and_its_interval() -> None:
    assert precision_at(0.9, 0.01, 0.01) == pytest.approx(0.009 / (0.009 + 0.0099))
    assert precision_at(0.0, 0.0, 0.01) == 0.0
    lo, hi = wilson_interval(0, 1000)
    assert lo == 0.0 and 0.003 < hi < 0.004  # no false positive in 1000 still allows ~0.38%
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(1 - hi) and 0.40 < lo < 0.41
    fig = at_prevalence(tp=90, fn=10, fp=2, tn=998, prevalence=0.01)
    assert fig["recall"] == 0.9 and fig["fpr"] == 0.002
    assert fig["precision"] == pytest.approx(precision_at(0.9, 0.002, 0.01), abs=1e-4)
    low, high = fig["precision_ci95"]
    assert low < fig["precision"] < high
    rarer = at_prevalence(tp=90, fn=10, fp=2, tn=998, prevalence=0.001)
    assert rarer["precision"] < fig["precision"] and rarer["recall"] == fig["recall"]


def test_rule_needs_similarity_for_embedding_modes() -> None:
    with pytest.raises(ValueError, match="seed similarity"):
        fit_rule("embed_all", np.array([0.9, 0.8]), np.array([0.1, 0.2]), 0.05, 0.3, 0.01)
    with pytest.raises(ValueError, match="unknown selection mode"):
        SelectionRule("everything", 0.5)


def _rule(mode: str) -> SelectionRule:
    return SelectionRule(
        mode,
        ft_threshold=0.5,
        pass_threshold=0.1,
        combined_threshold=0.0,
        similarity_weight=0.5,
        agent_mean=0.0,
        agent_std=1.0,
        similarity_mean=0.4,
        similarity_std=0.1,
    )


def test_apply_keeps_upstream_reasons_and_names_the_weak_signal() -> None:
    batch = pd.DataFrame(
        {
            "agent_score": [0.9, 0.05, 0.9, 0.3, np.nan, 0.99],
            "seed_similarity": [0.6, np.nan, 0.1, 0.8, np.nan, 0.9],
            "drop_reason": [None, None, None, None, None, "too_short"],
        }
    )
    out = _rule("cascade").apply(batch)
    assert out["selected"].tolist() == [True, False, False, True, False, False]
    assert out["drop_reason"].tolist() == [None, LOW_AGENT_SCORE, LOW_SEED_SIMILARITY, None, NO_TEXT, "too_short"]
    assert _rule("cascade").to_embed(batch).tolist() == [True, False, True, True, False, False]
    assert not _rule("fasttext_only").to_embed(batch).any()
    ft = _rule("fasttext_only").apply(batch)
    assert ft["selected"].tolist() == [True, False, True, False, False, False]


def test_rule_round_trips_through_json() -> None:
    rule = _rule("embed_all")
    assert SelectionRule.from_dict(rule.to_dict()) == rule
    assert rule.with_mode("cascade").mode == "cascade"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.floats(0, 1)),
            st.one_of(st.none(), st.floats(-1, 1)),
            st.sampled_from([None, None, "too_short", "not_english"]),
        ),
        min_size=1,
        max_size=30,
    ),
    st.sampled_from(["cascade", "embed_all", "fasttext_only"]),
)
def test_every_page_not_selected_has_a_drop_reason(rows: list, mode: str) -> None:
    batch = pd.DataFrame(
        {
            "agent_score": [np.nan if a is None else a for a, _, _ in rows],
            "seed_similarity": [np.nan if s is None else s for _, s, _ in rows],
            "drop_reason": [r for _, _, r in rows],
        }
    )
    out = _rule(mode).apply(batch)
    assert len(out) == len(batch)
    assert (out["selected"] ^ out["drop_reason"].notna()).all()
    kept = batch["drop_reason"].notna()
    assert (out.loc[kept, "drop_reason"] == batch.loc[kept, "drop_reason"]).all()


def test_prevalence_is_a_config_knob() -> None:
    from pydantic import ValidationError

    from raypipe.config import ClassifyConfig

    assert ClassifyConfig().prevalence == 0.01
    assert ClassifyConfig(prevalence=0.2).prevalence == 0.2
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValidationError):
            ClassifyConfig(prevalence=bad)


def test_a_fit_targets_no_lower_prevalence_than_its_negatives_resolve() -> None:
    from raypipe.classify.rule import MIN_FALSE_POSITIVES, resolvable_prevalence

    assert resolvable_prevalence(0.01, 5000) == 0.01  # a crawl-sized sample resolves 1%
    assert resolvable_prevalence(0.01, 65) == MIN_FALSE_POSITIVES / 65  # a small run: what it can see
    assert resolvable_prevalence(0.3, 10) == 0.5
    rng = np.random.default_rng(4)
    pos, neg = rng.normal(2.0, 1.0, 400), rng.normal(0.0, 1.0, 60)
    few = fit_rule("fasttext_only", 1 / (1 + np.exp(-pos)), 1 / (1 + np.exp(-neg)), 0.1, 0.5, 0.01)
    assert few.ft_threshold < 1 / (1 + np.exp(-neg.max()))  # not pushed above every held-out negative
