"""Outgoing links of an HTML page, resolved and normalized (resiliparse's lexbor parser)."""

from __future__ import annotations

import codecs

from resiliparse.parse.encoding import bytes_to_str, detect_encoding
from resiliparse.parse.html import HTMLTree

from raypipe.crawl.urls import normalize_url


def parse_html(body: bytes, charset: str | None = None) -> HTMLTree:
    """A DOM for ``body`` in the declared charset if Python knows it, else the one resiliparse detects."""
    try:
        encoding = codecs.lookup(charset).name if charset else detect_encoding(body)
    except LookupError:
        encoding = detect_encoding(body)
    return HTMLTree.parse(bytes_to_str(body, encoding))


def extract_links(body: bytes, page_url: str, charset: str | None = None, sort_query: bool = False) -> list[str]:
    """Distinct normalized http(s) targets of ``<a>``/``<area>`` hrefs, in document order.

    Relative links resolve against ``<base href>`` when the page has one, as a browser would.
    """
    tree = parse_html(body, charset)
    base = page_url
    if tree.head is not None:
        base_el = tree.head.query_selector("base[href]")
        if base_el is not None:
            base = normalize_url(base_el.getattr("href") or "", page_url) or page_url
    seen: dict[str, None] = {}
    if tree.document is None:
        return []
    for el in tree.document.query_selector_all("a[href], area[href]"):
        url = normalize_url(el.getattr("href") or "", base, sort_query)
        if url is not None:
            seen.setdefault(url, None)
    return list(seen)
