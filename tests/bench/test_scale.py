"""bench/scale.py's generated pages are distinct and deterministic, and its targets are computed as stated."""

from __future__ import annotations

from bench.scale import make_page, summarize

POOLS = {
    "en": [("a.example", f"english paragraph number {i} " + "word " * 12) for i in range(50)],
    "de": [("b.example", f"deutscher absatz nummer {i} " + "wort " * 12) for i in range(50)],
}
HEADS = {"a.example": "<style>p{}</style>", "b.example": ""}


def test_pages_are_distinct_deterministic_and_one_language() -> None:
    pages = [make_page(i, POOLS, ["en", "de"], [1, 1], HEADS) for i in range(40)]
    assert len({p.url for p in pages}) == 40
    assert len({p.html for p in pages}) == 40
    assert make_page(7, POOLS, ["en", "de"], [1, 1], HEADS) == pages[7]
    for page in pages:
        text = page.html.decode()
        assert ("english" in text) != ("deutscher" in text)
        assert 4 <= text.count("<p>") <= 16
    assert any("<style>p{}</style>" in p.html.decode() for p in pages)


def _run(pages: int, rss: float, rows: int, cpu: float) -> dict:
    return {
        "driver_rss_mib": rss,
        "object_store_peak_mib": 1.0,
        "driver_rows": {"total": rows},
        "files_written": {"extracted": pages // 100},
        "cpu_s": {"driver": cpu / 2, "worker": cpu / 2, "daemon": 99.0},
    }


def test_targets() -> None:
    runs = {1: _run(300, 500, 100, 30), 4: _run(1200, 550, 112, 96), 16: _run(4800, 640, 160, 400)}
    out = summarize(runs, 300)
    checks = out["checks"]
    assert checks["driver RSS 16x vs 1x"]["result"] == "FAIL"  # 640 / 500 = 1.28 > 1.2
    assert checks["driver rows per added page"]["value"] == round(60 / 4500, 4)
    assert checks["driver rows per added page"]["result"] == "PASS"
    # per page: 96 / 1200 = 0.08 at 4x, 400 / 4800 = 0.0833 at 16x (daemons left out)
    assert checks["CPU-s per page 16x vs 4x"]["result"] == "PASS"
    assert out["ratios_vs_1x"][16]["files_written"] == 16.0
