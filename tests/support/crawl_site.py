"""Test documentation sites for the crawler: real HTTP servers on 127.0.0.1, pages from ../shared.

Each ``DocServer`` is an aiohttp.web server on its own port (a distinct host for the crawler) in a
background thread. It records, server side, when every request arrived and how many were in
flight, which is what the politeness assertions measure. Page bodies are rendered at test time
from the real library documentation in ``seeds/api_docs_pypi`` (reStructuredText -> simple HTML).
"""

from __future__ import annotations

import asyncio
import gzip
import html
import itertools
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+])\1{2,}\s*$")
_DIRECTIVE = re.compile(r"^\.\. ([\w:-]+)::\s*(.*)$")
_LITERAL = re.compile(r"``(.+?)``")
_ROLE = re.compile(r":[\w:]+:`~?([^`<]+?)(?:\s*&lt;[^`]*&gt;)?`")
_CODE_DIRECTIVES = {"code-block", "code", "sourcecode", "doctest"}
_API_DIRECTIVES = {"function", "class", "method", "attribute", "autofunction", "autoclass", "coroutinefunction"}


def load_docs(shared_data: Path, package: str) -> dict[str, str]:
    """``{doc name: rst text}`` of one package's documentation files in the shared seed data."""
    docs: dict[str, str] = {}
    with gzip.open(shared_data / "seeds" / "api_docs_pypi" / "python_library_docs.jsonl.gz", "rt") as f:
        for line in f:
            row = json.loads(line)
            if row["package"] == package and row["path"].endswith(".rst"):
                docs[Path(row["path"]).stem] = row["text"]
    return docs


def _inline(text: str) -> str:
    escaped = html.escape(text, quote=False)
    return _ROLE.sub(r"<code>\1</code>", _LITERAL.sub(r"<code>\1</code>", escaped))


def _indented_block(lines: list[str], start: int) -> tuple[str, int]:
    """The indented block starting at ``start`` (blank lines inside kept), dedented; and the next index."""
    end = start
    while end < len(lines) and (not lines[end].strip() or lines[end][:1] in " \t"):
        end += 1
    block = lines[start:end]
    while block and not block[-1].strip():
        block.pop()
    indent = min((len(ln) - len(ln.lstrip()) for ln in block if ln.strip()), default=0)
    return "\n".join(ln[indent:] for ln in block).strip("\n"), end


def rst_to_html(text: str) -> str:
    """Headings, paragraphs, code blocks, API signatures and inline code of an rst document."""
    lines = text.splitlines()
    out: list[str] = []
    para: list[str] = []
    levels: dict[str, int] = {}

    def flush() -> None:
        if para:
            out.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()

    i = 0
    while i < len(lines):
        line, nxt = lines[i], lines[i + 1] if i + 1 < len(lines) else ""
        directive = _DIRECTIVE.match(line)
        if line.strip() and not directive and _UNDERLINE.match(nxt) and len(nxt.strip()) >= len(line.strip()):
            flush()
            level = levels.setdefault(nxt[0], min(len(levels) + 1, 4))
            out.append(f"<h{level}>{_inline(line.strip())}</h{level}>")
            i += 2
        elif _UNDERLINE.match(line) or not line.strip():
            flush()
            i += 1
        elif directive and directive.group(1) in _CODE_DIRECTIVES or line.rstrip().endswith("::") and not directive:
            if not directive:
                para.append(line.strip()[:-1])
            flush()
            i += 1
            while i < len(lines) and lines[i].strip().startswith(":"):
                i += 1
            code, i = _indented_block(lines, i)
            out.append(f"<pre><code>{html.escape(code, quote=False)}</code></pre>")
        elif directive or line.startswith(".. "):
            flush()
            if directive and directive.group(1) in _API_DIRECTIVES and directive.group(2):
                out.append(f"<dl><dt><code>{html.escape(directive.group(2))}</code></dt></dl>")
            i += 1
        else:
            para.append(line.strip())
            i += 1
    flush()
    return "\n".join(out)


def page(title: str, body_html: str, links: list[tuple[str, str]]) -> bytes:
    """A documentation page: navigation links around the main content."""
    nav = "".join(f'<li><a href="{html.escape(href)}">{html.escape(text)}</a></li>' for href, text in links)
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
        f"<body><nav><ul>{nav}</ul></nav><main><article>{body_html}</article></main>"
        f"<footer>Documentation test site</footer></body></html>"
    ).encode()


@dataclass
class Page:
    """What the server answers for one path."""

    body: bytes = b""
    status: int = 200
    content_type: str = "text/html"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    fail_first: int = 0
    drop_first: int = 0
    chunked_bytes: int = 0


@dataclass
class Hit:
    path: str
    start: float
    end: float | None = None


class DocServer:
    """One host: an aiohttp.web server on 127.0.0.1 with a free port, run in a background thread."""

    def __init__(self) -> None:
        self.pages: dict[str, Page] = {}
        self.hits: list[Hit] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._served: dict[str, int] = {}
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("test HTTP server did not start")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = self._runner.addresses[0][1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        hit = Hit(request.path_qs, time.monotonic())
        self.hits.append(hit)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request)
        finally:
            self.in_flight -= 1
            hit.end = time.monotonic()

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        spec = self.pages.get(request.path_qs) or self.pages.get(request.path)
        if spec is None:
            return web.Response(status=404, text="<html><body>not found</body></html>", content_type="text/html")
        served = self._served.get(request.path, 0)
        self._served[request.path] = served + 1
        if spec.delay_s:
            await asyncio.sleep(spec.delay_s)
        if served < spec.drop_first:
            assert request.transport is not None
            request.transport.abort()  # connection reset before any answer
            raise asyncio.CancelledError
        if served < spec.fail_first:
            return web.Response(status=500, text="<html><body>try again</body></html>", content_type="text/html")
        if spec.chunked_bytes:
            resp = web.StreamResponse(headers={"Content-Type": spec.content_type})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            chunk = b"<p>" + b"x" * 8000 + b"</p>\n"
            try:
                for _ in range(spec.chunked_bytes // len(chunk) + 1):
                    await resp.write(chunk)
                await resp.write_eof()
            except (ConnectionResetError, RuntimeError):
                pass
            return resp
        return web.Response(
            status=spec.status, body=spec.body, headers={"Content-Type": spec.content_type, **spec.headers}
        )

    def requested(self, predicate: Callable[[str], bool]) -> list[Hit]:
        return [h for h in self.hits if predicate(h.path)]

    def start_gaps(self) -> list[float]:
        """Seconds between consecutive request arrivals at this host."""
        starts = sorted(h.start for h in self.hits)
        return [b - a for a, b in itertools.pairwise(starts)]

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


AIOHTTP_PAGES = ["client_quickstart", "client_advanced", "abc", "streams", "multipart_reference", "logging"]
CLICK_PAGES = ["quickstart", "options", "arguments"]


def sitemap_xml(urls: list[str], index: bool = False) -> bytes:
    tag, item = ("sitemapindex", "sitemap") if index else ("urlset", "url")
    entries = "".join(f"<{item}><loc>{html.escape(u)}</loc></{item}>" for u in urls)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>'
        f'<{tag} xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{entries}</{tag}>'
    ).encode()


def build_api_site(server: DocServer, docs: dict[str, str], offsite: str, cross_host: str) -> None:
    """Host A: aiohttp docs under /docs/ with every kind of trouble a crawler meets.

    ``cross_host`` is a page of another in-scope host linked only from here; ``offsite`` a URL of a
    host that is not in scope (it must never be requested).
    """
    names = [n for n in AIOHTTP_PAGES if n in docs]
    nav = [("index.html", "Home")] + [(f"{n}.html", n) for n in names]
    special = [
        ("private/secret.html", "robots-disallowed"),
        ("/outside/page.html", "same host, outside the prefix"),
        (offsite, "off-site"),
        ("https://example.invalid/docs/", "off-site, unresolvable"),
        (cross_host, "another documented host"),
        ("old.html", "moved permanently"),
        ("temp.html", "moved temporarily"),
        ("loop-a.html", "redirect loop"),
        ("chain/0.html", "long redirect chain"),
        ("missing.html", "404"),
        ("flaky.html", "500 then 200"),
        ("reset.html", "connection reset, then 200"),
        ("slow.html", "times out"),
        ("data.json", "not HTML"),
        ("big.html", "too large"),
        ("deep/1.html", "deep chain"),
        ("excluded/page.html", "excluded by pattern"),
        ("client_quickstart.html#make-a-request", "fragment"),
        ("mailto:docs@example.invalid", "mail"),
        ("javascript:void(0)", "script"),
    ]
    pages = server.pages
    index_body = rst_to_html(docs["index"]) if "index" in docs else "<p>aiohttp documentation</p>"
    pages["/docs/index.html"] = Page(page("aiohttp", index_body, nav + special))
    for name in names:
        pages[f"/docs/{name}.html"] = Page(page(name, rst_to_html(docs[name]), nav))
    pages["/robots.txt"] = Page(
        (
            "User-agent: otherbot\nDisallow: /\n\n"
            f"User-agent: *\nDisallow: /docs/private/\nSitemap: {server.base}/sitemap.xml\n"
        ).encode(),
        content_type="text/plain",
    )
    listed = [f"{server.base}/docs/{p}.html" for p in ("orphan", "index", "private/s")]
    pages["/sitemap.xml"] = Page(
        sitemap_xml([f"{server.base}/sitemap-docs.xml.gz"], index=True), content_type="text/xml"
    )
    pages["/sitemap-docs.xml.gz"] = Page(gzip.compress(sitemap_xml(listed)), content_type="application/gzip")
    pages["/docs/orphan.html"] = Page(page("orphan", rst_to_html(docs.get("glossary", "Only in the sitemap.")), nav))
    pages["/docs/private/secret.html"] = Page(page("secret", "<p>never fetch me</p>", nav))
    pages["/outside/page.html"] = Page(page("outside", "<p>outside the docs prefix</p>", nav))
    pages["/docs/old.html"] = Page(status=301, headers={"Location": "/docs/moved.html"})
    pages["/docs/moved.html"] = Page(page("moved", "<p>The page moved here.</p>", nav))
    pages["/docs/temp.html"] = Page(status=302, headers={"Location": f"{server.base}/docs/abc.html"})
    pages["/docs/loop-a.html"] = Page(status=302, headers={"Location": "/docs/loop-b.html"})
    pages["/docs/loop-b.html"] = Page(status=302, headers={"Location": "/docs/loop-a.html"})
    for i in range(6):
        pages[f"/docs/chain/{i}.html"] = Page(status=302, headers={"Location": f"/docs/chain/{i + 1}.html"})
    pages["/docs/missing.html"] = Page(b"<html><body>gone</body></html>", status=404)
    pages["/docs/flaky.html"] = Page(page("flaky", rst_to_html(docs.get("streams", "flaky")), nav), fail_first=1)
    pages["/docs/reset.html"] = Page(page("reset", "<p>second try works</p>", nav), drop_first=1)
    pages["/docs/slow.html"] = Page(page("slow", "<p>slow</p>", nav), delay_s=2.0)
    pages["/docs/data.json"] = Page(b'{"api": true}', content_type="application/json")
    pages["/docs/big.html"] = Page(chunked_bytes=400_000)
    for i in range(1, 5):
        pages[f"/docs/deep/{i}.html"] = Page(page(f"deep {i}", f"<p>level {i}</p>", [(f"{i + 1}.html", "deeper")]))
    pages["/docs/excluded/page.html"] = Page(page("excluded", "<p>excluded</p>", nav))


def build_click_site(server: DocServer, docs: dict[str, str], offsite: str) -> None:
    """Host B: click docs under /click/, asking for a fractional crawl-delay; no sitemap."""
    names = [n for n in CLICK_PAGES if n in docs]
    nav = [("index.html", "Home"), ("admin/panel.html", "admin"), (offsite, "elsewhere")]
    nav += [(f"{n}.html", n) for n in names]
    pages = server.pages
    pages["/robots.txt"] = Page(
        b"User-agent: *\nCrawl-delay: 0.5\nDisallow: /click/admin/\n", content_type="text/plain"
    )
    pages["/click/index.html"] = Page(page("click", rst_to_html(docs.get("index", "click docs")), nav))
    for name in names:
        pages[f"/click/{name}.html"] = Page(page(name, rst_to_html(docs[name]), nav))
    pages["/click/hidden.html"] = Page(page("api", rst_to_html(docs.get("api", "click api")), nav))
    pages["/click/admin/panel.html"] = Page(page("admin", "<p>never fetch me</p>", nav))
