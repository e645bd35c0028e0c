"""URL normalization, crawl scope and host sharding.

Why normalize: the frontier dedups on the URL string, so ``HTTP://Docs.X.org:80/a/../b#s`` and
``http://docs.x.org/b`` must be one key. yarl already does the RFC 3986 work (case, default ports,
dot segments, percent-encoding); we add the crawler's choices on top: no fragments, no userinfo
(a credential must never reach a log), optional sorted query.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from yarl import URL

_SCHEMES = ("http", "https")


def normalize_url(url: str, base: str | None = None, sort_query: bool = False) -> str | None:
    """The canonical form of ``url`` (resolved against ``base``), or None if it is not http(s)."""
    try:
        parsed = URL(url.strip())
        if base is not None:
            parsed = URL(base).join(parsed)
    except (ValueError, TypeError):
        return None
    if parsed.scheme not in _SCHEMES or not parsed.raw_host:
        return None
    query = parsed.raw_query_string
    if sort_query and query:
        query = "&".join(sorted(query.split("&")))
    clean = URL.build(
        scheme=parsed.scheme,
        host=parsed.host_subcomponent,
        port=None if parsed.is_default_port() else parsed.port,
        path=parsed.raw_path or "/",
        query_string=query,
        encoded=True,
    )
    return str(clean)


def host_key(url: str) -> str:
    """``host[:port]`` of a normalized URL: the unit of politeness, robots.txt and sharding."""
    return URL(url).host_port_subcomponent or ""


def origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL, where its robots.txt and /sitemap.xml live."""
    return str(URL(url).origin())


def shard_of(host: str, shards: int) -> int:
    """Stable host -> shard (the same on every process and run, unlike Python's ``hash``)."""
    return int.from_bytes(hashlib.sha1(host.encode()).digest()[:8], "big") % shards


@dataclass(frozen=True)
class Site:
    """One site in scope: a host and the path prefix its pages live under."""

    host: str
    path_prefix: str

    @classmethod
    def from_start_url(cls, url: str, use_path_prefix: bool) -> Site:
        """The start URL's host and directory (``/docs/en/index.html`` -> ``/docs/en/``)."""
        path = URL(url).raw_path or "/"
        prefix = path[: path.rfind("/") + 1] if use_path_prefix else "/"
        return cls(host_key(url), prefix)

    def contains(self, url: str) -> bool:
        return host_key(url) == self.host and (URL(url).raw_path or "/").startswith(self.path_prefix)


@dataclass(frozen=True)
class Scope:
    """Which URLs may be crawled: inside a start URL's site, matching include, not matching exclude."""

    sites: tuple[Site, ...]
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def reject_reason(self, url: str) -> str | None:
        """None when ``url`` may be crawled, else the crawl-log reason (``scope`` or ``exclude``)."""
        if not any(site.contains(url) for site in self.sites):
            return "scope"
        if self.include and not any(re.search(p, url) for p in self.include):
            return "exclude"
        if any(re.search(p, url) for p in self.exclude):
            return "exclude"
        return None
