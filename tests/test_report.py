"""report.html: every section drawn from the stats a real pipeline run produced (every phase, each
drop counted once under the phase that dropped it), missing data shown as such, and the page
checked in a real headless Chromium (renders, charts present, no console message at all,
screenshot kept)."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from raypipe.config import StorageConfig
from raypipe.report import MISSING, render_report, score_histogram, top_domains, write_report
from raypipe.store.storage import OutputStore
from tests.support.forge_runs import run_job, short_tmp

PHASES = ("seeds", "extract", "score", "clean", "shard")


@pytest.fixture(scope="module")
def real_run(shared_data) -> Iterator[dict]:
    """stats.json of a small real run of every phase (``jobs/build_forge.py`` on local Ray): two
    real WARCs, one seed file, the shipped benchmark data, the shared code dataset."""
    with short_tmp() as work:
        sets = [
            f"input=[{shared_data}/warc/built/web-00000.warc.gz,{shared_data}/warc/archive/dolma_sample-0000.warc.gz]",
            f"output={work}/run",
            "ray.num_cpus=2",
            "ray.progress_bars=false",
            f"seeds.sources=[{shared_data}/seeds/api_docs_pypi/python_library_docs.jsonl.gz]",
            "seeds.harvest_modules=[json]",
            "seeds.max_per_source=80",
            f"mix.code.uri={shared_data}/mix/code/pypi_python_code.jsonl.gz",
            "dedup.memory_budget_mb=256",
            # one shuffle partition: Ray Data's hash join fails on a partition that gets no label
            # row ("unable to find column doc_id; valid columns: []"), which this small run hits
            "dedup.min_partitions=1",
            "shards.tokens_per_shard=200000",
        ]
        run_job(sets, {}, work / "job", timeout_s=1200)
        yield json.loads((work / "run" / "stats.json").read_text())


def stage(stats: dict, name: str) -> int:
    return next(s["documents"] for s in stats["funnel"] if s["stage"] == name)


@pytest.mark.integration
@pytest.mark.timeout(1500)
def test_a_real_runs_report_covers_every_phase(real_run):
    stats = real_run
    assert set(PHASES) <= set(stats["timings"])
    stages = [s["stage"] for s in stats["funnel"]]
    for name in ("records_read", "quality_kept", "agent_selected", "clean_input", "clean_kept", "in_shards"):
        assert name in stages, stages
    assert stats["clean"]["funnel"] and "drop_reasons" in stats["clean"]
    page = render_report(stats)
    for chart in ("chart-funnel", "chart-seed_similarity", "chart-agent_score", "chart-tokens", "chart-mix",
                  "chart-drops", "chart-record-skips", "chart-timings", "chart-languages"):  # fmt: skip
        assert f'id="{chart}"' in page, chart
    for phase in PHASES:
        assert f"<title>{phase}: " in page  # a bar in the time-per-stage chart


@pytest.mark.integration
@pytest.mark.timeout(1500)
def test_a_real_runs_drops_are_counted_once_under_the_phase_that_dropped_them(real_run):
    stats = real_run
    extract, score, clean = (stats[p]["drop_reasons"] for p in ("extract", "score", "clean"))
    assert sum(extract.values()) == stage(stats, "html_responses") - stage(stats, "quality_kept")
    assert sum(score.values()) == stage(stats, "quality_kept") - stage(stats, "agent_selected")
    assert sum(clean.values()) == stage(stats, "clean_input") - stage(stats, "clean_kept")
    assert extract.get("language") and "language" not in score and "selected" not in score
    assert set(score) <= {"low_agent_score", "low_seed_similarity", "no_text"}, score
    page = render_report(stats)
    assert "score: selected" not in page and "score: language" not in page
    assert f"extract: language: {extract['language']:,}" in page


CHARTS = [
    "chart-funnel",
    "chart-seed_similarity",
    "chart-agent_score",
    "chart-tokens",
    "chart-mix",
    "chart-domains",
    "chart-drops",
    "chart-record-skips",
    "chart-timings",
    "chart-languages",
]


def full_stats() -> dict:
    rng = random.Random(7)
    urls = [f"https://{host}/page/{i}" for i, host in enumerate(["docs.python.org"] * 6 + ["www.numpy.org"] * 3)]
    return {
        "output": "s3://bucket/runs/full",
        "config_hash": "0123456789abcdef",
        "funnel": [
            {"stage": "records_read", "documents": 2609},
            {"stage": "html_responses", "documents": 1148},
            {"stage": "quality_kept", "documents": 420},
            {"stage": "retrieved", "documents": 150},
            {"stage": "in_shards", "documents": 80},
        ],
        "extract": {
            "drop_reasons": {"language": 400, "quality:too_short": 200},
            "record_skips": {"type_request": 1148, "not_html": 40},
            "languages": {"en": 700, "de": 300},
            "seconds": 42.5,
        },
        "clean": {"drop_reasons": {"duplicate_near": 12, "contamination": 3}},
        "warnings": ["NO BENCHMARK SOURCE: decontamination matched nothing"],
        "scores": {
            "seed_similarity": score_histogram([rng.gauss(0.35, 0.12) for _ in range(400)], 0.55, lo=0, hi=1),
            "agent_score": score_histogram([rng.betavariate(2, 5) for _ in range(150)], 0.5, lo=0, hi=1),
        },
        "mix": {
            "target_ratio": {"agent": 0.6, "code": 0.2, "text": 0.2},
            "achieved_ratio": {"agent": 0.58, "code": 0.21, "text": 0.21},
            "streams": {"agent": {"tokens": 1_200_000}, "code": {"tokens": 430_000}, "text": {"tokens": 431_000}},
        },
        "top_domains": top_domains(urls),
        "timings": {"extract": 42.5, "retrieve": 80.1, "clean": 30.0, "shard": 65.3},
    }


def test_helpers_build_the_documented_shapes():
    hist = score_histogram([0.0, 0.1, 0.5, 0.99, 1.0, float("nan"), None], threshold=0.5, bins=10, lo=0, hi=1)
    assert len(hist["bins"]) == 11 and len(hist["counts"]) == 10
    assert sum(hist["counts"]) == 5 and hist["counts"][-1] == 2 and hist["counts"][5] == 1
    assert hist["threshold"] == 0.5
    assert top_domains(["https://www.a.org/x", "http://a.org/y", "https://b.com/", None], n=1) == [
        {"domain": "a.org", "documents": 2}
    ]


def test_every_section_is_drawn_from_full_stats():
    page = render_report(full_stats())
    for chart in CHARTS:
        assert f'id="{chart}"' in page, chart
    assert MISSING not in page
    assert page.count('class="threshold"') == 2
    assert "threshold 0.55" in page and "threshold 0.5" in page
    assert "clean: duplicate_near" in page and "extract: language" in page
    assert 'id="sec-alerts"' in page and "NO BENCHMARK SOURCE" in page
    assert "58.0%" in page and "60.0%" in page  # achieved and target shares
    assert "docs.python.org" in page and "numpy.org" in page


def test_missing_and_malformed_data_never_raise():
    page = render_report({})
    assert page.count(MISSING) == 8 and "<svg" not in page
    page = render_report(
        {
            "funnel": [{"stage": "records_read", "documents": 10}],
            "scores": {"seed_similarity": {"bins": [0, 1], "counts": [1, 2]}, "agent_score": "garbage"},
            "mix": 5,
            "timings": {"extract": "soon"},
            "extract": ["not", "a", "dict"],
        }
    )
    assert 'id="chart-funnel"' in page
    assert "could not be drawn: ValueError: seed_similarity" in page
    assert "could not be drawn: TypeError" in page  # agent_score is a string
    assert page.count(MISSING) == 5  # mix, domains, drops, timings, languages


def test_labels_are_escaped():
    page = render_report({"top_domains": [{"domain": "<script>alert(1)</script>", "documents": 1}]})
    assert "<script>" not in page and "&lt;script&gt;" in page


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium is missing: .ci/run installs Debian's chromium package before make test")
    pytest.skip("chromium not installed (apt-get install -y chromium); the report is checked in a real browser")


def run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=180, check=False)


def test_report_renders_in_headless_chromium(tmp_path):
    binary = chromium()
    store = OutputStore(str(tmp_path / "run"), StorageConfig())
    uri = write_report(full_stats(), store)
    url = Path(uri).resolve().as_uri()

    dom = run_chromium(binary, tmp_path / "profile-dom", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for chart in CHARTS:
        svg = re.search(rf'<svg id="{chart}"[^>]*>(.*?)</svg>', dom.stdout, re.S)
        assert svg, f"{chart} missing from the rendered DOM"
        assert "<rect" in svg.group(1), f"{chart} has no bars"
    assert dom.stdout.count('class="threshold"') == 2
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    assert not console, console

    shot = tmp_path / "report.png"
    done = run_chromium(binary, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=900,2800", url)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
    print(f"report screenshot: {shot}")


@pytest.mark.integration
def test_report_on_s3_is_served_as_html(s3_server, s3_env):
    s3_server.create_bucket("reports")
    store = OutputStore("s3://reports/runs/one", StorageConfig())
    assert write_report(full_stats(), store) == "s3://reports/runs/one/report.html"
    head = s3_server.client().get_object(Bucket="reports", Key="runs/one/report.html")
    assert head["ContentType"].startswith("text/html")
    body = head["Body"].read().decode()
    assert body.startswith("<!DOCTYPE html>") and 'id="chart-funnel"' in body
