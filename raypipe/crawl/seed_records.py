"""Crawled documentation pages -> API-doc seed records for the seed builder.

A record has exactly the seed fields ``{id, kind, text, source, license, apis}``: ``text`` is the
page's main content (resiliparse, ``main_content=True``) and ``apis`` the identifier-like names a
reader would look up, taken from code blocks, inline code, definition terms and headings. The
heuristic favours precision: a name must look like code (a call, a dotted path or an import in a
code block; a whole inline-code text that is one identifier; a heading or definition term that is a
call, a dotted path, snake_case or CamelCase, so "Quickstart" is not an API), and keywords,
builtins, abbreviations such as "e.g" and file or domain names are dropped.
"""

from __future__ import annotations

import builtins
import hashlib
import keyword
import logging
import re
from typing import Any

import pandas as pd
from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.html import HTMLTree

from raypipe.config import RunConfig
from raypipe.crawl.links import parse_html
from raypipe.crawl.urls import host_key
from raypipe.store.warc import read_warc_file

log = logging.getLogger(__name__)

SEED_COLUMNS = ["id", "kind", "text", "source", "license", "apis"]
MAX_APIS = 64

_CALL = re.compile(r"(?<![\w.])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\s*\(")
_DOTTED = re.compile(r"(?<![\w.])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)\b")
_IMPORT = re.compile(r"^\s*(?:from|import)\s+([A-Za-z_][\w.]*)", re.MULTILINE)
_WHOLE = re.compile(r"^([A-Za-z_][\w.]*)(?:\(.*\))?$", re.DOTALL)
_CODE_LIKE = re.compile(r"[._(]|[a-z][A-Z]")
_NOT_APIS = set(keyword.kwlist) | set(dir(builtins)) | {"self", "cls", "args", "kwargs"}
_FILE_SUFFIXES = {"html", "htm", "txt", "py", "rst", "md", "json", "yaml", "yml", "toml", "cfg", "com", "org", "io"}


def _keep(name: str) -> bool:
    first, _, rest = name.partition(".")
    last = name.rsplit(".", 1)[-1]
    if name in _NOT_APIS or len(first) < 2:
        return False
    return not (rest and last.lower() in _FILE_SUFFIXES)


def extract_api_names(tree: HTMLTree) -> list[str]:
    """Identifier-like API names of a documentation page, in first-seen order (at most ``MAX_APIS``)."""
    found: dict[str, None] = {}
    if tree.document is None:
        return []
    for block in tree.document.query_selector_all("pre"):
        text = block.text
        for pattern in (_IMPORT, _CALL, _DOTTED):
            for name in pattern.findall(text):
                found.setdefault(name, None)
    for el in tree.document.query_selector_all("code, dt, h1, h2, h3, h4"):
        text = el.text.strip().rstrip("¶#").strip()
        whole = _WHOLE.match(text)
        if whole and (el.tag == "code" or _CODE_LIKE.search(text)):
            names = [whole.group(1)]
        else:
            names = _CALL.findall(text)
        for name in names:
            found.setdefault(name.rstrip("."), None)
    return [name for name in found if _keep(name)][:MAX_APIS]


def page_to_seed_record(url: str, html: bytes, charset: str | None, min_chars: int) -> dict[str, Any] | None:
    """The seed record of one page, or None when its main text is shorter than ``min_chars``."""
    tree = parse_html(html, charset)
    text = (extract_plain_text(tree, main_content=True) or "").strip()
    if len(text) < min_chars:
        return None
    return {
        "id": "crawl-" + hashlib.sha256(url.encode()).hexdigest()[:16],
        "kind": "api_doc",
        "text": text,
        "source": f"crawl:{host_key(url)}",
        "license": None,
        "apis": extract_api_names(tree),
    }


def seed_records_of_warc(uri: str, cfg: RunConfig) -> tuple[list[dict[str, Any]], int]:
    """(seed records, pages too short) of one crawl WARC file, read with raypipe's own WARC reader."""
    records: list[dict[str, Any]] = []
    short = 0
    for table in read_warc_file(uri, cfg.storage, cfg.extract):
        for row in table.to_pylist():
            if row["url"] is None:
                continue
            record = page_to_seed_record(row["url"], row["html"], row["charset"], cfg.crawl.min_seed_chars)
            if record is None:
                short += 1
            else:
                records.append(record)
    return records, short


def crawl_warcs_to_seed_records(warc_uris: list[str], cfg: RunConfig) -> pd.DataFrame:
    """Seed records (``SEED_COLUMNS``, sorted by id) from the 200 HTML answers of crawl WARC files.

    One Ray task per file when Ray is running (extraction is CPU-bound), else a local loop. Pages
    with too little main text (``crawl.min_seed_chars``) make no record; their number is logged.
    """
    import ray

    if ray.is_initialized() and len(warc_uris) > 1:
        task = ray.remote(seed_records_of_warc)
        results = ray.get([task.remote(uri, cfg) for uri in warc_uris])
    else:
        results = [seed_records_of_warc(uri, cfg) for uri in warc_uris]
    records = [record for file_records, _ in results for record in file_records]
    short = sum(n for _, n in results)
    log.info("seed records: %d from %d WARC files; %d pages too short", len(records), len(warc_uris), short)
    frame = pd.DataFrame(records, columns=SEED_COLUMNS)
    return frame.sort_values("id", kind="stable").reset_index(drop=True)
