"""Charset decoding and main-content extraction.

Decoding order: the HTTP header's charset, then the page's own meta charset, then uchardet's guess
(resiliparse), with UTF-8 and cp1252 as fallbacks, so mislabelled pages still decode readably.
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.encoding import bytes_to_str, detect_encoding
from resiliparse.parse.html import HTMLTree

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)


class ExtractTimeout(Exception):
    """One document exceeded the per-document time guard."""


def _valid_codec(name: object) -> str | None:
    if not isinstance(name, str) or not name.strip():
        return None
    import codecs

    try:
        return codecs.lookup(name.strip().lower()).name
    except LookupError:
        return None


def decode_html(html: bytes, declared: str | None) -> tuple[str, str]:
    """Decode HTML bytes to text; returns (text, the encoding that was used)."""
    head = html[:4096]
    meta = _META_CHARSET.search(head)
    encoding = (
        _valid_codec(declared)
        or _valid_codec(meta.group(1).decode("ascii", "ignore") if meta else None)
        or _valid_codec(detect_encoding(html, max_len=65536))
        or "utf-8"
    )
    return bytes_to_str(html, encoding, fallback_encodings=("utf-8", "cp1252")), encoding


def extract_text(html: str, extractor: str = "resiliparse") -> tuple[str, str]:
    """Main content as plain text plus the page title; empty text when nothing is found."""
    if extractor == "trafilatura":
        import trafilatura

        text = trafilatura.extract(html, include_comments=False, include_tables=True) or ""
        meta = trafilatura.extract_metadata(html)
        return text, (meta.title if meta and meta.title else "")
    tree = HTMLTree.parse(html)
    title = tree.title or ""
    text = extract_plain_text(tree, main_content=True, alt_texts=False, links=False, preserve_formatting=True)
    return text, title


@contextmanager
def time_guard(seconds: float) -> Iterator[None]:
    """Raise ExtractTimeout if the body runs longer than ``seconds``.

    Uses SIGALRM where we are the main thread (Ray task and actor workers run batches there by
    default); elsewhere the HTML size cap is the guard, since parsing time is linear in size.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: object) -> None:
        raise ExtractTimeout(f"extraction exceeded {seconds}s")

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
