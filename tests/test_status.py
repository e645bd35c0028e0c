"""``raypipe status OUTPUT`` on a finished crawl (real Ray, real WARCs) and on a run mid-way, whose
state is written by the crawl's own tracker from the writer's summaries."""

from __future__ import annotations

import json
import time

import pyarrow.parquet as pq
import pytest

from raypipe.cli import main
from raypipe.config import StorageConfig, load_config
from raypipe.phases.extract import ExtractTracker
from raypipe.status import phase_progress, status_lines
from raypipe.store.state import RunState
from raypipe.store.storage import OutputStore


def crawl_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("extract"))


@pytest.mark.integration
def test_status_of_a_finished_crawl(shared_data, tmp_path, capsys):
    import ray

    from raypipe.pipeline import run

    inputs = [
        shared_data / "warc" / "archive" / "dolma_sample-0000.warc.gz",
        shared_data / "warc" / "cc" / "resiliparse_warcfile_CC-MAIN-2020-34.warc.gz",
    ]
    out = tmp_path / "run"
    cfg = load_config(
        base={
            "input": [str(p) for p in inputs],
            "output": str(out),
            "ray": {"num_cpus": 2, "progress_bars": False},
            "phases": ["extract"],
        }
    )
    try:
        run(cfg)
    finally:
        ray.shutdown()
    documents = sum(pq.read_metadata(p).num_rows for p in (out / "extracted").rglob("*.parquet"))
    assert documents == 22 + 16  # the HTML responses of the two files (PROVENANCE.md)

    assert main(["status", str(out)]) == 0
    text = capsys.readouterr().out
    line = crawl_line(text)
    assert " done " in line and "2/2 files" in line and f"{documents:,} docs" in line and "docs/s" in line
    assert "ETA" not in line
    assert "committed: no" in text

    report = (out / "report.html").read_text()
    assert 'id="chart-funnel"' in report and 'id="chart-drops"' in report and 'id="chart-timings"' in report

    manifest = {"totals": {"shards": 1, "documents": documents, "tokens": 12345}}
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert main(["status", str(out)]) == 0
    assert f"committed: yes (manifest.json: 1 shards, {documents} documents, 12,345 tokens)" in capsys.readouterr().out


def summary(uri: str, docs: int) -> dict:
    """What the crawl's PartWriter reports for one fully written input file."""
    stats = {"records": 2 * docs + 1, "html_responses": docs, "skipped": {"type_request": docs}, "errors": []}
    return {
        "source_file": uri,
        "rows": docs,
        "file_stats": json.dumps(stats),
        "part": f"extracted/{uri}/part-0.parquet",
        "drops": json.dumps({"kept": docs}),
        "languages": json.dumps({"en": docs}),
    }


def test_status_of_a_running_crawl(tmp_path, capsys):
    store = OutputStore(str(tmp_path / "run"), StorageConfig())
    state = RunState(store)
    tracker = ExtractTracker(state, total_files=5, already_done=0)
    tracker.update(summary("s3://in/a.warc.gz", 50))
    tracker.update(summary("s3://in/b.warc.gz", 30))
    partial = summary("s3://in/c.warc.gz", 7)
    partial["file_stats"] = None  # c is being written: rows arrived, its end-of-file marker not yet
    tracker.update(partial)
    tracker.flush()  # records are written in batches; the driver flushes them at least every record_every_s

    record = state.phase("extract")
    assert record["status"] == "running" and abs(record["started"] - time.time()) < 60
    progress = phase_progress(record, state.units("extract"), now=record["started"] + 100)
    assert progress["files_done"] == 2 and progress["files_total"] == 5
    assert progress["docs"] == 80  # completed files' units; c's rows count once its marker arrives
    assert progress["docs_per_s"] == pytest.approx(0.8)
    assert progress["eta_s"] == pytest.approx(150.0)  # 3 files left at 2 files per 100 s

    lines = status_lines(store, now=record["started"] + 100)
    assert lines[0] == f"run: {store.prefix}"
    line = crawl_line("\n".join(lines))
    assert "running" in line and "2/5 files" in line and "80 docs" in line and "0.8 docs/s" in line
    assert "ETA 2m30s" in line and "elapsed 1m40s" in line
    assert lines[-1] == "committed: no (no manifest.json yet)"

    assert main(["status", str(tmp_path / "run")]) == 0
    assert "running" in crawl_line(capsys.readouterr().out)


def test_status_without_run_state(tmp_path, capsys):
    assert main(["status", str(tmp_path / "nothing")]) == 1
    assert "no run state" in capsys.readouterr().out


def test_phase_summaries_fit_on_one_line(tmp_path):
    """Phases without file units show their scalar facts; histograms and tables stay in report.html."""
    store = OutputStore(str(tmp_path / "run"), StorageConfig())
    state = RunState(store)
    summary = {"pages": 800, "selected": 120, "histograms": {"agent_score": {"bins": [0, 1]}}, "seconds": 12.5}
    state.set_phase("score", "done", started=time.time() - 300, summary=summary)
    line = next(x for x in status_lines(store) if x.startswith("score"))
    assert "done" in line and "pages=800" in line and "selected=120" in line
    assert "docs" not in line and "histograms" not in line and "bins" not in line
