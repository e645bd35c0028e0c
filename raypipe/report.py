"""``report.html``: what a person looks at after a run, drawn from the run's stats in one file.

Why inline SVG drawn here: the report must open from S3 or from a laptop's disk with no network
(no CDN, no chart library) and look the same in any browser; a Content-Security-Policy in the page
forbids every fetch, and there is no script at all. Every section is optional: whatever a run did
not produce is shown as "not in this run", and a malformed value is shown as such, never raised.

Stats keys read (all optional; the phases that produce them fill them in):

- ``output``, ``config_hash``: shown in the header.
- ``funnel``: ``[{"stage": str, "documents": int}, ...]`` in pipeline order.
- ``scores``: ``{"seed_similarity": H, "agent_score": H}`` where ``H`` is
  ``{"bins": [edge0, ..., edgeN], "counts": [c1, ..., cN], "threshold": float | None}``
  (``score_histogram`` builds one from raw scores).
- ``mix``: the mix plan's summary: ``{"target_ratio": {stream: r}, "achieved_ratio": {stream: r},
  "streams": {stream: {"tokens": int, ...}}}``; ``tokens_by_stream`` ``{stream: int}`` also works.
  When absent, ``manifest.json``'s ``mix`` is used if the run has committed one.
- ``top_domains``: ``[{"domain": str, "documents": int}, ...]`` of selected documents
  (``top_domains`` builds it from URLs).
- ``<phase>.drop_reasons`` (``{reason: count}``) for every phase section that has one (extract,
  score, clean): each phase counts only the pages it dropped itself, so a page appears once, under
  the phase that dropped it; and ``extract.record_skips`` (WARC records that never became a page).
- ``timings``: ``{stage: seconds}``; otherwise every phase section's ``seconds``.
- ``extract.languages``: ``{language: documents}``.
- ``warnings`` and ``failed_inputs``: shown at the top, where they cannot be missed.
"""

from __future__ import annotations

import html
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import urlparse

from raypipe.status import duration
from raypipe.store.storage import OutputStore

REPORT = "report.html"
MISSING = "not in this run"
WIDTH = 760
BAR = "#3b6ea8"
BAR_ALT = "#a9c1de"
ACCENT = "#c0392b"


def score_histogram(
    values: Iterable[float], threshold: float | None, bins: int = 40, lo: float | None = None, hi: float | None = None
) -> dict[str, Any]:
    """The ``stats["scores"][name]`` shape for raw scores (NaN and None are left out)."""
    data = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    lo = min(data, default=0.0) if lo is None else lo
    hi = max(data, default=1.0) if hi is None else hi
    if hi <= lo:
        hi = lo + 1.0
    width = (hi - lo) / bins
    counts = [0] * bins
    for v in data:
        counts[min(bins - 1, max(0, int((v - lo) / width)))] += 1
    return {"bins": [lo + i * width for i in range(bins + 1)], "counts": counts, "threshold": threshold}


def top_domains(urls: Iterable[str | None], n: int = 20) -> list[dict[str, Any]]:
    """The ``stats["top_domains"]`` shape: the ``n`` hosts with the most documents."""
    hosts = Counter((urlparse(u).hostname or "?").removeprefix("www.") for u in urls if u)
    return [{"domain": d, "documents": c} for d, c in hosts.most_common(n)]


def write_report(stats: dict[str, Any], store: OutputStore) -> str:
    """Render ``stats`` to ``report.html`` under the run's output prefix; returns its URI.

    On S3 the object gets ``Content-Type: text/html`` so a browser shows it instead of downloading.
    """
    if "mix" not in stats and store.exists("manifest.json"):
        manifest = json.loads(store.read_bytes("manifest.json"))
        stats = {**stats, "mix": manifest.get("mix")}
    uri = store.write_text(REPORT, render_report(stats))
    if store.is_s3:
        key = store.key(REPORT)
        store.call(
            lambda: store.fs.setxattr(key, copy_kwargs={"ContentType": "text/html; charset=utf-8"}),
            f"set content type of {uri}",
        )
    return uri


def render_report(stats: dict[str, Any]) -> str:
    """The whole page as a string (no I/O)."""
    sections = [
        ("funnel", "Documents through the pipeline", _funnel),
        ("seed_similarity", "Seed similarity (retrieval)", lambda s: _score(s, "seed_similarity")),
        ("agent_score", "Agent score (classifier)", lambda s: _score(s, "agent_score")),
        ("mix", "Tokens by stream and mix", _mix),
        ("domains", "Top selected domains", _domains),
        ("drops", "Drop reasons", _drops),
        ("timings", "Time per stage", _timings),
        ("languages", "Languages of extracted pages", _languages),
    ]
    body = [_header(stats), _alerts(stats)] + [_section(key, title, fn, stats) for key, title, fn in sections]
    raw = html.escape(json.dumps(stats, indent=2, sort_keys=True, default=str))
    body.append(f'<section id="sec-raw"><details><summary>stats.json</summary><pre>{raw}</pre></details></section>')
    return _PAGE.format(title=html.escape(f"raypipe run report: {stats.get('output', '')}"), body="\n".join(body))


def _section(key: str, title: str, fn: Callable[[dict[str, Any]], str | None], stats: dict[str, Any]) -> str:
    try:
        content = fn(stats)
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as e:
        content = f'<p class="missing">could not be drawn: {html.escape(type(e).__name__)}: {html.escape(str(e))}</p>'
    if content is None:
        content = f'<p class="missing">{MISSING}</p>'
    return f'<section id="sec-{key}"><h2>{html.escape(title)}</h2>\n{content}\n</section>'


def _header(stats: dict[str, Any]) -> str:
    funnel = stats.get("funnel") or []
    cards = []
    if isinstance(funnel, list) and funnel and isinstance(funnel[0], dict):
        cards.append((str(funnel[0].get("stage", "first stage")), _num(funnel[0].get("documents"))))
        if len(funnel) > 1:
            cards.append((str(funnel[-1].get("stage", "last stage")), _num(funnel[-1].get("documents"))))
    tokens = _tokens_by_stream(stats.get("mix"))
    if tokens:
        cards.append(("tokens", _num(sum(tokens.values()))))
    seconds = _stage_seconds(stats)
    if seconds:
        cards.append(("time", duration(sum(seconds.values()))))
    card_html = "".join(
        f'<div class="card"><div class="v">{html.escape(v)}</div><div class="k">{html.escape(k)}</div></div>'
        for k, v in cards
    )
    meta = []
    if stats.get("output"):
        meta.append(f"output <code>{html.escape(str(stats['output']))}</code>")
    if stats.get("config_hash"):
        meta.append(f"config <code>{html.escape(str(stats['config_hash'])[:12])}</code>")
    return f'<header><h1>raypipe run report</h1><p>{" · ".join(meta)}</p><div class="cards">{card_html}</div></header>'


def _alerts(stats: dict[str, Any]) -> str:
    """Run-level warnings (no benchmark source...) and inputs that could not be read."""
    lines = [str(w) for w in stats.get("warnings") or [] if w]
    failed = stats.get("failed_inputs") or []
    if isinstance(failed, list):
        lines += [f"input not read: {f.get('uri')}: {f.get('error')}" for f in failed if isinstance(f, dict)]
    if not lines:
        return ""
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    return f'<section id="sec-alerts" class="warn"><h2>Warnings</h2><ul>{items}</ul></section>'


def _funnel(stats: dict[str, Any]) -> str | None:
    funnel = stats.get("funnel")
    if not funnel:
        return None
    rows = [(str(step["stage"]), float(step["documents"])) for step in funnel]
    first = rows[0][1] or 1.0
    return _hbar_chart("chart-funnel", rows, lambda v: f"{_num(v)} ({v / first:.1%})")


def _score(stats: dict[str, Any], name: str) -> str | None:
    hist = (stats.get("scores") or {}).get(name)
    if not hist:
        return None
    bins, counts = [float(b) for b in hist["bins"]], [int(c) for c in hist["counts"]]
    if len(bins) != len(counts) + 1 or not counts:
        raise ValueError(f"{name}: expected len(bins) == len(counts) + 1, got {len(bins)} and {len(counts)}")
    threshold = hist.get("threshold")
    threshold = None if threshold is None else float(threshold)
    total = sum(counts)
    caption = f"{_num(total)} documents scored"
    if threshold is not None:
        above = sum(c for c, left in zip(counts, bins, strict=False) if left >= threshold)
        caption += f"; threshold {threshold:.3g}: {_num(above)} in bins at or above it"
    return _histogram_chart(f"chart-{name}", bins, counts, threshold) + f'<p class="note">{html.escape(caption)}</p>'


def _tokens_by_stream(mix: Any) -> dict[str, float]:
    if not isinstance(mix, dict):
        return {}
    if isinstance(mix.get("tokens_by_stream"), dict):
        return {str(k): float(v) for k, v in mix["tokens_by_stream"].items()}
    streams = mix.get("streams")
    if isinstance(streams, dict):
        return {str(k): float(v.get("tokens", 0)) for k, v in streams.items() if isinstance(v, dict)}
    return {}


def _mix(stats: dict[str, Any]) -> str | None:
    mix = stats.get("mix")
    tokens = _tokens_by_stream(mix)
    if not tokens:
        return None
    target = {str(k): float(v) for k, v in (mix.get("target_ratio") or {}).items()}
    total = sum(tokens.values()) or 1.0
    achieved = {str(k): float(v) for k, v in (mix.get("achieved_ratio") or {}).items()} or {
        s: t / total for s, t in tokens.items()
    }
    streams = sorted(set(tokens) | set(target), key=lambda s: (-tokens.get(s, 0), s))
    parts = [_hbar_chart("chart-tokens", [(s, tokens.get(s, 0.0)) for s in streams], _num)]
    parts.append(_mix_chart("chart-mix", streams, target, achieved))
    rows = "".join(
        f"<tr><td>{html.escape(s)}</td><td>{_num(tokens.get(s, 0))}</td>"
        f"<td>{_pct(target.get(s))}</td><td>{_pct(achieved.get(s))}</td></tr>"
        for s in streams
    )
    parts.append(
        f'<table id="table-mix"><tr><th>stream</th><th>tokens</th><th>target</th><th>achieved</th></tr>{rows}</table>'
    )
    for warning in mix.get("warnings") or []:
        parts.append(f'<p class="note warn">{html.escape(str(warning))}</p>')
    return "\n".join(parts)


def _domains(stats: dict[str, Any]) -> str | None:
    domains = stats.get("top_domains")
    if not domains:
        return None
    rows = [(str(d["domain"]), float(d["documents"])) for d in domains]
    return _hbar_chart("chart-domains", rows, _num)


def _drops(stats: dict[str, Any]) -> str | None:
    rows: list[tuple[str, float]] = []
    for phase, section in stats.items():
        if isinstance(section, dict) and isinstance(section.get("drop_reasons"), dict):
            rows += [(f"{phase}: {reason}", float(n)) for reason, n in section["drop_reasons"].items()]
    parts = []
    if rows:
        parts.append(_hbar_chart("chart-drops", sorted(rows, key=lambda r: -r[1]), _num))
    skips = (stats.get("extract") or {}).get("record_skips") if isinstance(stats.get("extract"), dict) else None
    if isinstance(skips, dict) and skips:
        rows = sorted(((str(k), float(v)) for k, v in skips.items()), key=lambda r: -r[1])
        parts.append("<h3>WARC records that were not HTML pages</h3>")
        parts.append(_hbar_chart("chart-record-skips", rows, _num))
    return "\n".join(parts) or None


def _stage_seconds(stats: dict[str, Any]) -> dict[str, float]:
    timings = stats.get("timings")
    if isinstance(timings, dict) and timings:
        return {str(k): float(v) for k, v in timings.items() if isinstance(v, (int, float))}
    return {
        str(k): float(v["seconds"])
        for k, v in stats.items()
        if isinstance(v, dict) and isinstance(v.get("seconds"), (int, float))
    }


def _timings(stats: dict[str, Any]) -> str | None:
    seconds = _stage_seconds(stats)
    if not seconds:
        return None
    return _hbar_chart("chart-timings", list(seconds.items()), duration)


def _languages(stats: dict[str, Any]) -> str | None:
    crawl = stats.get("extract")
    langs = crawl.get("languages") if isinstance(crawl, dict) else None
    if not langs:
        return None
    rows = sorted(((str(k), float(v)) for k, v in langs.items()), key=lambda r: -r[1])[:20]
    return _hbar_chart("chart-languages", rows, _num)


def _hbar_chart(chart_id: str, rows: Sequence[tuple[str, float]], fmt: Callable[[float], str]) -> str:
    """Horizontal bars, one per row, label on the left and the formatted value after the bar."""
    label_w = min(260, 12 + 7 * max(len(_clip(label)) for label, _ in rows))
    value_w = 150
    bar_space = WIDTH - label_w - value_w
    top = max((v for _, v in rows), default=0.0) or 1.0
    row_h = 24
    height = row_h * len(rows) + 8
    out = [_svg_open(chart_id, height)]
    for i, (label, value) in enumerate(rows):
        y = 4 + i * row_h
        w = max(1.0, bar_space * max(value, 0.0) / top) if value > 0 else 0.0
        text = html.escape(fmt(value))
        out.append(
            f'<g class="bar"><title>{html.escape(label)}: {text}</title>'
            f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end">{html.escape(_clip(label))}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 8}" fill="{BAR}"/>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + 16}" class="val">{text}</text></g>'
        )
    out.append("</svg>")
    return "".join(out)


def _histogram_chart(chart_id: str, bins: list[float], counts: list[int], threshold: float | None) -> str:
    """Vertical bars over score bins; bins at or above the threshold in the strong colour, a marked line at it."""
    left, right, top, bottom = 50, 20, 24, 36
    height = 220
    plot_w, plot_h = WIDTH - left - right, height - top - bottom
    lo, hi = bins[0], bins[-1]
    span = (hi - lo) or 1.0
    peak = max(counts) or 1

    def x_of(v: float) -> float:
        return left + plot_w * (v - lo) / span

    out = [_svg_open(chart_id, height)]
    out.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" class="axis"/>')
    out.append(f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" class="tick">{_num(peak)}</text>')
    out.append(f'<text x="{left - 6}" y="{top + plot_h}" text-anchor="end" class="tick">0</text>')
    for c, a, b in zip(counts, bins, bins[1:], strict=False):
        h = plot_h * c / peak
        fill = BAR if threshold is None or a >= threshold else BAR_ALT
        x0, x1 = x_of(a), x_of(b)
        out.append(
            f'<rect class="bin" x="{x0 + 0.5:.1f}" y="{top + plot_h - h:.1f}" width="{max(0.5, x1 - x0 - 1):.1f}" '
            f'height="{h:.1f}" fill="{fill}"><title>{a:.3g} to {b:.3g}: {_num(c)}</title></rect>'
        )
    for i in range(6):
        v = lo + span * i / 5
        out.append(f'<text x="{x_of(v):.1f}" y="{top + plot_h + 16}" text-anchor="middle" class="tick">{v:.3g}</text>')
    if threshold is not None:
        x = x_of(min(max(threshold, lo), hi))
        out.append(
            f'<line class="threshold" x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{top + plot_h}" '
            f'stroke="{ACCENT}" stroke-width="2" stroke-dasharray="5,3"/>'
            f'<text x="{x + 4:.1f}" y="{top - 8}" fill="{ACCENT}" class="tick">threshold {threshold:.3g}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _mix_chart(chart_id: str, streams: list[str], target: dict[str, float], achieved: dict[str, float]) -> str:
    """Per stream: the target share (light) above the achieved share (strong), on a 0-100% scale."""
    label_w, value_w = 90, 150
    bar_space = WIDTH - label_w - value_w
    group_h = 44
    height = group_h * len(streams) + 30
    out = [_svg_open(chart_id, height)]
    out.append(
        f'<rect x="{label_w}" y="4" width="12" height="10" fill="{BAR_ALT}"/>'
        f'<text x="{label_w + 16}" y="13" class="tick">target</text>'
        f'<rect x="{label_w + 70}" y="4" width="12" height="10" fill="{BAR}"/>'
        f'<text x="{label_w + 86}" y="13" class="tick">achieved</text>'
    )
    for i, s in enumerate(streams):
        y = 24 + i * group_h
        t, a = target.get(s), achieved.get(s)
        out.append(f'<text x="{label_w - 8}" y="{y + 22}" text-anchor="end">{html.escape(_clip(s))}</text>')
        for j, (share, fill, kind) in enumerate(((t, BAR_ALT, "target"), (a, BAR, "achieved"))):
            if share is None:
                continue
            w = bar_space * max(0.0, min(1.0, share))
            yy = y + 4 + j * 18
            out.append(
                f'<g class="bar"><title>{html.escape(s)} {kind}: {share:.2%}</title>'
                f'<rect x="{label_w}" y="{yy}" width="{w:.1f}" height="14" fill="{fill}"/>'
                f'<text x="{label_w + w + 6:.1f}" y="{yy + 12}" class="val">{kind} {share:.1%}</text></g>'
            )
    out.append("</svg>")
    return "".join(out)


def _svg_open(chart_id: str, height: int) -> str:
    return (
        f'<svg id="{html.escape(chart_id)}" class="chart" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" role="img">'
    )


def _clip(label: str, n: int = 36) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"


def _num(v: Any) -> str:
    if v is None:
        return "–"
    return f"{int(round(float(v))):,}"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v:.1%}"


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: #1f2933; background: #f5f7fa; margin: 0; padding: 24px; }}
main {{ max-width: 820px; margin: 0 auto; }}
header h1 {{ margin: 0 0 4px; font-size: 22px; }}
header p {{ margin: 0 0 12px; color: #52606d; }}
code {{ background: #e4e7eb; padding: 1px 4px; border-radius: 3px; }}
.cards {{ display: flex; flex-wrap: wrap; gap: 10px; margin-bottom: 8px; }}
.card {{ background: #fff; border: 1px solid #d9e2ec; border-radius: 6px; padding: 8px 14px; min-width: 120px; }}
.card .v {{ font-size: 20px; font-weight: 600; }}
.card .k {{ color: #52606d; font-size: 12px; }}
section {{ background: #fff; border: 1px solid #d9e2ec; border-radius: 6px; padding: 12px 16px; margin: 14px 0; }}
section h2 {{ font-size: 16px; margin: 0 0 8px; }}
section h3 {{ font-size: 14px; margin: 12px 0 4px; color: #52606d; }}
svg.chart {{ max-width: 100%; height: auto; font-size: 12px; }}
svg text {{ fill: #1f2933; }}
svg text.val, svg text.tick {{ fill: #52606d; font-size: 11px; }}
svg line.axis {{ stroke: #9aa5b1; }}
.missing {{ color: #7b8794; font-style: italic; }}
.note {{ color: #52606d; font-size: 12px; margin: 4px 0; }}
.warn {{ color: #b44d12; }}
table {{ border-collapse: collapse; margin-top: 8px; }}
td, th {{ padding: 3px 12px 3px 0; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
pre {{ font-size: 11px; overflow-x: auto; }}
</style>
</head>
<body><main>
{body}
</main></body>
</html>
"""
