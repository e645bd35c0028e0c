"""Seeds as the classifier meets pages: rendered to an HTML documentation page, then extracted.

Why: fastText scores the *extracted text of web pages*, and a model trained on raw seed records
(one record, no page furniture, one block per line) fits the seeds' own shape. Measured on real
documentation pages (issue 13) that gate kept too little: agent_score had ROC AUC 0.69 on them. A
seed rendered as a site would serve it (title, headings, paragraphs, parameter lists, code
blocks, the site's navigation and footer) and reduced to text by the extraction the crawl uses
(``raypipe.extract.html.extract_text``, resiliparse main content) carries what the extractor
keeps and drops, its line breaks and bullets, and whatever boilerplate survives, as real pages do.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

from raypipe.extract.html import extract_text
from raypipe.seeds.render import BULLET

_HEADING = re.compile(r"^[A-Z][\w ]{0,38}$")
_CODE_HINT = re.compile(
    r"(^\s*(>>>|\$ |import |from |def |class |curl |GET |POST |PUT |DELETE |PATCH |\{|\[))|[;{}]\s*$"
)
SITE_HEAD = (
    '<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title></head><body>'
    '<header><form action="/search"><input type="text" name="q" placeholder="Search docs"></form></header>'
    '<div class="wrapper"><nav class="sidebar"><h3>Contents</h3><ul><li><a href="/docs/start">Getting started</a></li>'
    '<li><a href="/docs/api">API reference</a></li><li><a href="/docs/changes">Changelog</a></li></ul></nav>'
    '<main><article class="document">'
)
SITE_TAIL = (
    '</article><div class="related"><a href="prev.html">Previous</a> <a href="next.html">Next</a></div></main></div>'
    "<footer><p>&copy; Copyright the authors. Built with a documentation generator.</p>"
    '<p><a href="/privacy">Privacy</a> <a href="/terms">Terms</a></p></footer></body></html>'
)


def _is_code(block: str) -> bool:
    lines = [line for line in block.splitlines() if line.strip()]
    return bool(lines) and sum(bool(_CODE_HINT.search(line)) for line in lines) * 2 >= len(lines)


def _block_html(block: str) -> str:
    lines = block.splitlines()
    head, rest = lines[0].strip(), lines[1:]
    if rest and _HEADING.match(head) and not head.endswith("."):
        return f"<h2>{html.escape(head)}</h2>" + _block_html("\n".join(rest))
    if all(line.startswith(BULLET) for line in lines if line.strip()):
        items = "".join(f"<li>{html.escape(line.removeprefix(BULLET))}</li>" for line in lines if line.strip())
        return f"<ul>{items}</ul>"
    if _is_code(block):
        return f"<pre><code>{html.escape(block)}</code></pre>"
    return f"<p>{html.escape(block)}</p>".replace("\n", "<br>\n")


def seed_page_html(text: str) -> str:
    """A seed's text as a documentation site's page: its first line the title and ``<h1>``, each
    blank-line separated block a heading, list, code block or paragraph, inside site furniture."""
    blocks = [b.strip("\n") for b in re.split(r"\n\s*\n", (text or "").strip()) if b.strip()]
    if not blocks:
        return SITE_HEAD.format(title="") + SITE_TAIL
    title = blocks[0].splitlines()[0].strip()
    first_rest = "\n".join(blocks[0].splitlines()[1:])
    body = [f"<h1>{html.escape(title)}</h1>"]
    body += [_block_html(b) for b in ([first_rest] if first_rest.strip() else []) + blocks[1:]]
    return SITE_HEAD.format(title=html.escape(title[:120])) + "".join(body) + SITE_TAIL


def seeds_as_pages(texts: Sequence[str]) -> list[str]:
    """Each seed rendered (``seed_page_html``) and extracted as the crawl extracts pages; a seed
    whose rendering the extractor empties keeps its own text (it still says what we look for)."""
    out = []
    for text in texts:
        extracted, _ = extract_text(seed_page_html(text))
        out.append(extracted.strip() or (text or ""))
    return out
