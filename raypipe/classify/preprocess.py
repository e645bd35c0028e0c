"""The one text normalization that fastText sees, at training time and at prediction time alike.

Why one function: a classifier trained on text normalized one way and applied to text normalized
another way silently loses accuracy. Why these steps: API documentation is recognized by its
vocabulary *and* by the shape of code in it (``from_pretrained(``, ``GET /v1/users``,
``getProfile``). Splitting identifiers into their parts and keeping code punctuation as tokens
lets the model generalize from the APIs in the seeds to APIs it never saw, and replacing numbers
and URLs by placeholder tokens stops it from memorizing version strings and links. Truncating to
the first N tokens keeps long pages and short seed records on a comparable footing and bounds the
cost per page.
"""

from __future__ import annotations

import re

_URL = re.compile(r"(?:https?|ftp)://\S+|www\.\S+")
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
# Word characters form tokens; every other visible character (code punctuation) is its own token.
_TOKEN = re.compile(r"[^\W\d_]+|\d+|[^\w\s]|_")
_LABEL_MARK = re.compile(r"__label__", re.IGNORECASE)


def _split_identifiers(text: str) -> str:
    """``getProfile`` -> ``get Profile``, ``HTTPServer`` -> ``HTTP Server`` (before lowercasing)."""
    return _CAMEL.sub(" ", text)


def normalize_text(text: str, max_tokens: int = 1000) -> str:
    """Normalize one document into the single line of tokens fastText trains and predicts on.

    Steps: URLs -> ``urltoken``, e-mail addresses -> ``emailtoken``, camelCase split, numbers ->
    ``0``, lowercase, identifiers split on ``_`` and ``.`` with the punctuation kept as tokens,
    whitespace (newlines included, which fastText would read as a record break) collapsed, and
    at most ``max_tokens`` tokens kept from the start. ``__label__`` inside the text is defused so
    a page can never inject a label.
    """
    if not text:
        return ""
    text = text[: max_tokens * 16]
    text = _LABEL_MARK.sub(" label ", text)
    text = _URL.sub(" urltoken ", text)
    text = _EMAIL.sub(" emailtoken ", text)
    text = _split_identifiers(text)
    text = _NUMBER.sub("0", text)
    tokens = _TOKEN.findall(text.lower())
    return " ".join(tokens[:max_tokens])
