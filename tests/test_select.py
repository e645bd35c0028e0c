"""One selector: the verdict comes from ordered rules over tags, and can be re-made with new
thresholds from the tags alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from raypipe.classify.rule import SelectionRule
from raypipe.config import QualityConfig
from raypipe.select import AgentRule, Flag, Language, Quality, Select, TagReason, reselect

GOOD = {
    "n_words": 400, "mean_word_length": 5.0, "symbol_word_ratio": 0.0, "bullet_lines_ratio": 0.0,
    "ellipsis_lines_ratio": 0.0, "dup_line_fraction": 0.0, "dup_paragraph_fraction": 0.0,
    "alpha_word_fraction": 0.95, "stop_words": 40,
}  # fmt: skip


def pages() -> pa.Table:
    rows = [
        {"doc_id": "a", "extract_error": None, "language": "en", "contaminated": False, "agent_score": 0.99},
        {"doc_id": "b", "extract_error": None, "language": "en", "contaminated": False, "agent_score": 0.10},
        {"doc_id": "c", "extract_error": None, "language": "de", "contaminated": True, "agent_score": 0.99},
        {"doc_id": "d", "extract_error": "empty_text", "language": None, "contaminated": True, "agent_score": None},
        {"doc_id": "e", "extract_error": None, "language": "unknown", "contaminated": False, "agent_score": 0.99},
        {"doc_id": "f", "extract_error": None, "language": "en", "contaminated": True, "agent_score": 0.99},
        {"doc_id": "g", "extract_error": None, "language": "en", "contaminated": False, "agent_score": 0.99},
    ]
    for r in rows:
        r.update(GOOD)
    rows[6]["n_words"] = 3  # too short
    return pa.Table.from_pylist(rows)


def drop_rules() -> list:
    return [
        TagReason("extract_error"),
        Language(("en",)),
        Quality(QualityConfig()),
        Flag("contaminated", "contamination"),
    ]


def rule(threshold: float) -> AgentRule:
    return AgentRule(SelectionRule("fasttext_only", ft_threshold=threshold).to_dict())


def test_the_first_failing_rule_names_the_reason_and_the_agent_rule_routes_the_rest() -> None:
    out = Select(drop_rules(), rule(0.5)).run(pages()).to_pandas().set_index("doc_id")
    assert out.loc["d", "drop_reason"] == "empty_text"  # before contamination, though both apply
    assert out.loc["c", "drop_reason"] == "language"
    assert out.loc["f", "drop_reason"] == "contamination"
    assert out.loc["g", "drop_reason"] == "quality:too_short"
    assert out.loc[["c", "d", "f", "g"], "stream"].isna().all() and not out.loc[["c", "d", "f", "g"], "selected"].any()
    assert out.loc["a", "selected"] and out.loc["a", "stream"] == "agent" and pd.isna(out.loc["a", "drop_reason"])
    assert out.loc["e", "stream"] == "agent"  # an unknown language is not a foreign one
    assert out.loc["b", "stream"] == "text" and out.loc["b", "drop_reason"] == "low_agent_score"


def test_without_an_agent_rule_kept_pages_are_text_with_no_reason() -> None:
    out = Select(drop_rules()).run(pages()).to_pandas().set_index("doc_id")
    assert out.loc["a", "stream"] == "text" and pd.isna(out.loc["a", "drop_reason"]) and not out["selected"].any()


def test_reselect_with_new_thresholds_needs_only_the_tags() -> None:
    first = Select(drop_rules(), rule(0.5)).run(pages())
    again = reselect(first, drop_rules(), rule(0.05))  # a laxer threshold: b is selected now
    verdict = dict(zip(again.column("doc_id").to_pylist(), again.column("stream").to_pylist(), strict=True))
    assert verdict["b"] == "agent" and verdict["c"] is None
    assert again.column("agent_score").to_pylist() == first.column("agent_score").to_pylist()
    assert reselect(first, [], None).column("stream").to_pylist() == ["text"] * 7  # no rule drops anything


def test_quality_rule_is_the_extraction_verdict() -> None:
    from raypipe.extract.quality import quality_verdict

    rng = np.random.default_rng(2)
    rows = [{**GOOD, "n_words": int(n), "stop_words": int(s)} for n, s in rng.integers(0, 300, (50, 2))]
    got = Quality(QualityConfig()).reasons(pa.Table.from_pylist(rows).to_pandas())
    assert list(got) == [quality_verdict(r, QualityConfig()) for r in rows]


def test_prior_route_keeps_every_stream_it_was_given() -> None:
    from raypipe.select import PriorRoute

    rows = pa.table(
        {
            "doc_id": ["a", "b", "c", "d"],
            "stream": ["agent", "text", "code", "code"],
            "select_reason": [None, "low_agent_score", None, None],
            "contaminated": [False, False, False, True],
        }
    )
    out = Select([Flag("contaminated", "contamination")], PriorRoute()).run(rows)
    assert out.column("stream").to_pylist() == ["agent", "text", "code", None]
    assert out.column("drop_reason").to_pylist() == [None, "low_agent_score", None, "contamination"]
    assert out.column("selected").to_pylist() == [True, False, False, False]
