"""Gopher-style quality signals (Rae et al. 2021, "Scaling Language Models", appendix A).

Every signal is returned as a number so it can be stored as a column and re-thresholded later
without re-extracting (tag first, select later); ``quality_verdict`` applies the configured rules.

One departure from Gopher: the share of words with a letter in them (``alpha_word_fraction``)
counts the prose lines, not the code. The rule is there to catch pages that are not language
(number tables, symbol soup); on API documentation it caught the code examples instead
(``x = f(a, b)``: four of six tokens without a letter). On the development set's dev split
(``bench/devset.py``) it dropped 209 of 2,472 real documentation pages over all words and 89 over
prose lines; among the split's 892 negatives, 9 and 5.

Two thresholds are looser than Gopher's (``QualityConfig``), for the same reason: the duplicate-line
share (0.5, not 0.3), which an API reference exceeds by repeating ``Parameters``, ``Returns`` and
type names, and the ``#``/ellipsis share (0.2, not 0.1), which commented code exceeds. With them
(and line numbers counted as code), the quality rules drop 210 of the dev split's 2,472
documentation pages instead of 294, and 89 of the test split's 2,020 instead of 130, while the
negatives they drop stay the same pages (128 of 886 and 80 of 754: those fail another rule too).

The mean word length, likewise, is taken over the prose lines when the page's words as a whole fall
outside Gopher's 3-10 characters: a reference page lists dotted names (``celery.worker.consumer.
Gossip``) that lift the mean above 10 while its sentences are ordinary English. On the dev split
this keeps 66 of the 94 documentation pages the rule dropped (Sphinx and gtk-doc references); the
66 negatives it lets on to the classifier are docs sites' member lists and name indexes, none
of them an ordinary web page. A page without prose lines keeps the value over all its words.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from raypipe.config import QualityConfig
from raypipe.extract.language import is_code_line

_ALPHA = re.compile(r"[^\W\d_]")
_BULLETS = ("•", "●", "○", "■", "□", "▪", "▫", "–", "-", "*", "·", "‣", "⁃")
_ELLIPSES = ("...", "…")
_CODE_CHARS = "{}[]()<>=;_*/\\|&^%$#@~`+"
_NO_CODE_CHARS = str.maketrans("", "", _CODE_CHARS)
PROSE_PASS_BELOW = 0.9
"""Pages with at least this share of words with a letter skip the per-line prose pass."""
WORD_LENGTH_RANGE = (3.0, 10.0)
"""Gopher's mean word length bounds; a page outside them is measured again over its prose lines."""
STOP_WORDS_EN = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})


def _dup_fraction(items: list[str]) -> float:
    """Fraction of characters that sit in items seen before in the same document."""
    items = [i for i in items if i.strip()]
    if not items:
        return 0.0
    seen: Counter = Counter()
    dup_chars = 0
    total = 0
    for item in items:
        total += len(item)
        if seen[item]:
            dup_chars += len(item)
        seen[item] += 1
    return dup_chars / total if total else 0.0


def _alpha_count(words: list[str]) -> int:
    return len(list(filter(_ALPHA.search, words)))  # filter keeps the loop in C: ~2.5x cheaper than a genexpr


def _prose_alpha_fraction(text: str, words: list[str]) -> float:
    """Share of words with a letter: the larger of the share over all words and over the lines that
    are not code. A line is code when symbols prose rarely uses (``_CODE_CHARS``) are over a tenth
    of its characters, or one for every two tokens (the thresholds of ``is_code_line``; its other
    marks, dotted and camelCase names, contain letters and so cannot lower the share), and a line
    of digits alone is a source listing's line number (YARD and other generators print them one
    per line beside the code).

    The per-line pass costs ~4x the rest of the signals on long documentation pages, so it runs
    only on pages under ``PROSE_PASS_BELOW`` over all words; the value is exact for any rule
    threshold up to that bound (the default rule is 0.8)."""
    if not words:
        return 0.0
    alpha, n = _alpha_count(words), len(words)
    if alpha >= PROSE_PASS_BELOW * n:
        return alpha / n
    code_alpha = code_words = 0
    for line in text.split("\n"):
        body = line.strip()
        marks = len(body) - len(body.translate(_NO_CODE_CHARS))
        if body.isdigit() or (marks and (10 * marks > len(body) or 2 * marks >= body.count(" ") + 1)):
            tokens = body.split()
            code_words += len(tokens)
            code_alpha += _alpha_count(tokens)
    prose = (alpha - code_alpha) / (n - code_words) if n > code_words else 0.0
    return max(alpha / n, prose)


def _mean_word_length(text: str, words: list[str]) -> float:
    """Mean length of all words, or of the prose lines' words when that falls outside Gopher's range
    (see the module docstring) and the page has prose lines."""
    if not words:
        return 0.0
    whole = sum(map(len, words)) / len(words)
    if WORD_LENGTH_RANGE[0] <= whole <= WORD_LENGTH_RANGE[1]:
        return whole
    prose = [w for line in text.split("\n") if not is_code_line(line) for w in line.split()]
    return sum(map(len, prose)) / len(prose) if prose else whole


def quality_signals(text: str, language: str | None) -> dict[str, Any]:
    """All Gopher signals for one document."""
    words = text.split()  # the same tokens as \S+ (both split on str.isspace), at a third of the cost
    n_words = len(words)
    lines = [ln for ln in text.split("\n") if ln.strip()]
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    n_lines = max(1, len(lines))
    symbols = text.count("#") + sum(text.count(e) for e in _ELLIPSES)
    lowered = {w.lower().strip(".,;:!?\"'()") for w in words} if language == "en" else set()
    return {
        "n_words": n_words,
        "mean_word_length": _mean_word_length(text, words),
        "symbol_word_ratio": symbols / n_words if n_words else 0.0,
        "bullet_lines_ratio": sum(ln.lstrip().startswith(_BULLETS) for ln in lines) / n_lines,
        "ellipsis_lines_ratio": sum(ln.rstrip().endswith(_ELLIPSES) for ln in lines) / n_lines,
        "dup_line_fraction": _dup_fraction(lines),
        "dup_paragraph_fraction": _dup_fraction(paragraphs),
        "alpha_word_fraction": _prose_alpha_fraction(text, words),
        "stop_words": len(lowered & STOP_WORDS_EN) if language == "en" else -1,
    }


def quality_verdict(sig: dict[str, Any], cfg: QualityConfig) -> str | None:
    """The first failed rule as a drop reason (``quality:<rule>``), or None when the page passes."""
    checks = [
        ("too_short", sig["n_words"] < cfg.min_words),
        ("too_long", sig["n_words"] > cfg.max_words),
        ("mean_word_length", not cfg.min_mean_word_length <= sig["mean_word_length"] <= cfg.max_mean_word_length),
        ("symbol_word_ratio", sig["symbol_word_ratio"] > cfg.max_symbol_word_ratio),
        ("bullet_lines", sig["bullet_lines_ratio"] > cfg.max_bullet_lines_ratio),
        ("ellipsis_lines", sig["ellipsis_lines_ratio"] > cfg.max_ellipsis_lines_ratio),
        ("dup_lines", sig["dup_line_fraction"] > cfg.max_duplicate_line_fraction),
        ("dup_paragraphs", sig["dup_paragraph_fraction"] > cfg.max_duplicate_paragraph_fraction),
        ("alpha_words", sig["alpha_word_fraction"] < cfg.min_alpha_word_fraction),
        ("stop_words", 0 <= sig["stop_words"] < cfg.min_stop_words),
    ]
    for name, failed in checks:
        if failed:
            return f"quality:{name}"
    return None
