"""robots.txt rules and sitemap parsing for one host.

robots.txt is fetched by our own HTTP client (through the host's politeness gate, with retries)
and parsed by ``protego``, the parser Scrapy uses, because it implements RFC 9309 where the stdlib
``urllib.robotparser`` does not: ``*`` wildcards and ``$`` end anchors in paths, the longest
matching rule wins (``Allow`` wins a tie), and a fractional ``Crawl-delay`` is kept as given. What
an answer means follows RFC 9309: 401/403 forbid the whole host, other 4xx allow it, and an
unreachable robots.txt (5xx or network failure after retries) forbids it, because we cannot know
what the site asked.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from lxml import etree
from protego import Protego

_SITEMAP_NS = "{http://www.sitemaps.org/schemas/sitemap/0.9}"
# What an answer that is no robots.txt means, written as the robots.txt that says the same.
_FORBID_ALL = "User-agent: *\nDisallow: /\n"
_ALLOW_ALL = ""


@dataclass
class HostRules:
    """What a host's robots.txt allows us, and the sitemaps it names."""

    parser: Protego
    agent: str
    crawl_delay: float = 0.0
    sitemaps: list[str] = field(default_factory=list)

    def allowed(self, url: str) -> bool:
        return self.parser.can_fetch(url, self.agent)


def product_token(user_agent: str) -> str:
    """``raypipe-crawler`` from ``raypipe-crawler/0.1 (+url)``: the name robots.txt groups match."""
    return (user_agent.split("/")[0].split() or ["*"])[0]


def rules_from_answer(status: int | None, body: bytes, user_agent: str) -> HostRules:
    """Rules from a robots.txt answer; ``status`` None means it could not be fetched at all.

    The crawl delay is the larger of ``Crawl-delay`` and the spacing ``Request-rate`` asks for.
    """
    agent = product_token(user_agent)
    if status is None or status >= 500 or status in (401, 403):
        text = _FORBID_ALL
    elif status >= 400:
        text = _ALLOW_ALL
    else:
        text = body.decode("utf-8", errors="replace")
    parser = Protego.parse(text)
    delay = float(parser.crawl_delay(agent) or 0.0)
    rate = parser.request_rate(agent)
    if rate and rate.requests:
        delay = max(delay, rate.seconds / rate.requests)
    return HostRules(parser, agent, delay, list(parser.sitemaps))


def parse_sitemap(body: bytes, max_urls: int, max_bytes: int) -> tuple[list[str], list[str]]:
    """(page URLs, nested sitemap URLs) of a sitemap or sitemap index.

    A gzipped sitemap is inflated to at most ``max_bytes`` (no gzip bomb); lxml runs with entity
    resolution and network access off, and ``recover`` so a sloppy sitemap still yields its good
    entries.
    """
    if body[:2] == b"\x1f\x8b":
        try:
            body = zlib.decompressobj(31).decompress(body, max_bytes)
        except zlib.error:
            return [], []
    parser = etree.XMLParser(resolve_entities=False, no_network=True, recover=True, huge_tree=False)
    try:
        root = etree.fromstring(body, parser)
    except etree.XMLSyntaxError:
        return [], []
    if root is None:
        return [], []
    locs = [el.text.strip() for el in root.iter(f"{_SITEMAP_NS}loc", "loc") if el.text and el.text.strip()]
    locs = locs[:max_urls]
    if etree.QName(root).localname == "sitemapindex":
        return [], locs
    return locs, []
