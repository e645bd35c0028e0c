"""Issue 15, cases 1 and 2, on real local Ray and real WARCs: an input that answers 503 on every try
is recorded as failed (never done), the run exits non-zero and lists it, and a rerun reads it; a
changed setting reruns the phase it changes (and the ones after it), not the ones before."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from bench.driver_rows import install, uninstall
from raypipe.cli import main
from raypipe.config import StorageConfig
from raypipe.store.state import RunState
from raypipe.store.storage import OutputStore
from raypipe.store.warc import file_stem

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@dataclass
class FlakyServer:
    """Serves one file over HTTP on 127.0.0.1; answers 503 to every GET while ``failing``."""

    path: Path
    failing: bool = True
    requests: list[int] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def flaky(shared_data) -> Iterator[FlakyServer]:
    state = FlakyServer(shared_data / "warc" / "archive" / "dolma_sample-0000.warc.gz")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            code = 503 if state.failing else 200
            state.requests.append(code)
            body = b"slow down" if state.failing else state.path.read_bytes()
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/crawl/{state.path.name}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_unreadable_input_fails_the_run_and_a_rerun_reads_it(shared_data, flaky, tmp_path, caplog, capsys):
    import ray

    local = [
        shared_data / "warc" / "cc" / "resiliparse_warcfile_CC-MAIN-2020-34.warc.gz",
        shared_data / "warc" / "edge_cases" / "resiliparse_clipped_truncated.warc.gz",  # damaged, reads fine
    ]
    out = tmp_path / "run"
    config = write_config(
        tmp_path / "c.yaml",
        {
            "input": [*map(str, local), flaky.url],
            "output": str(out),
            "phases": ["extract"],
            "ray": {"num_cpus": 2, "progress_bars": False},
            "storage": {"retries": 1, "backoff_base_s": 0.01, "backoff_max_s": 0.02},
        },
    )
    state = RunState(OutputStore(str(out), StorageConfig()))
    stem = file_stem(flaky.url)
    caplog.set_level(logging.INFO)
    try:
        assert main(["run", str(config)]) == 1
    finally:
        ray.shutdown()
    assert "1 input files could not be read" in capsys.readouterr().err
    assert flaky.requests == [503] * 4  # retries=1: two tries, and the whole file once more at the end
    stats = json.loads((out / "stats.json").read_text())
    assert [f["uri"] for f in stats["failed_inputs"]] == [flaky.url]
    assert "503" in stats["failed_inputs"][0]["error"]
    assert stem not in state.units("extract") and stem in state.failures("extract")
    assert not (out / "extracted" / stem).exists()
    assert state.phase("extract")["status"] == "failed"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(flaky.url in line for line in errors[-3:]), errors
    clipped = state.units("extract")[file_stem(str(local[1]))]
    assert clipped["skipped"].get("truncated_gzip") == 1  # damage inside a readable file: counted, done

    assert main(["status", str(out)]) == 0
    shown = capsys.readouterr().out
    assert f"failed: {flaky.url}" in shown and "files_failed=1" in shown

    flaky.failing = False
    done_parts = [p for u in state.units("extract").values() for p in u["parts"]]
    before = {p: (out / p).stat().st_mtime_ns for p in done_parts}
    try:
        assert main(["run", str(config)]) == 0
    finally:
        ray.shutdown()
    assert flaky.requests[-1] == 200
    units = state.units("extract")
    assert stem in units and not state.failures("extract")
    pages = sum(pq.read_metadata(p).num_rows for p in (out / "extracted" / stem).rglob("*.parquet"))
    assert pages == units[stem]["html_responses"] == 22  # dolma_sample-0000's HTML responses (PROVENANCE.md)
    assert before  # the files read on the first run are not read again: their parts stay as written
    for part, mtime in before.items():
        assert (out / part).stat().st_mtime_ns == mtime
    assert {p for k, u in units.items() if k != stem for p in u["parts"]} == set(before)
    stats = json.loads((out / "stats.json").read_text())
    assert "failed_inputs" not in stats and state.phase("extract")["status"] == "done"


def test_changed_setting_reruns_its_phase_and_not_the_earlier_ones(shared_data, tmp_path, caplog, capsys):
    import ray

    from raypipe.config import load_config
    from raypipe.pipeline import run

    out = tmp_path / "run"
    base = {
        "input": [str(shared_data / "warc" / "built" / "web-00000.warc.gz")],
        "output": str(out),
        "phases": ["seeds", "extract", "score"],
        "ray": {"num_cpus": 2, "progress_bars": False},
        "seeds": {
            "sources": [str(shared_data / "seeds" / "api_docs_pypi" / "python_library_docs.jsonl.gz")],
            "harvest_modules": ["json"],
            "max_per_source": 80,
        },
    }
    state = RunState(OutputStore(str(out), StorageConfig()))
    caplog.set_level(logging.INFO)
    try:
        counter = install()
        try:
            first = run(load_config(base=base))
        finally:
            uninstall()
        assert first["score"]["mode"] == "cascade"
        # issue 14: the classifier's sample goes from the workers to the training task, not the driver
        sampled = first["score"]["rounds"][0]["sampled_pages"]
        assert sampled > 10 and counter.total < sampled / 2, counter.by_caller
        assert not [c for c in counter.by_caller if "raypipe/classify/" in c], counter.by_caller
        records = {p: state.phase(p) for p in ("seeds", "extract", "score")}
        assert records["score"]["settings"]["classify.mode"] == "cascade"
        units = {k: u["settings"] for k, u in state.units("extract").items()}

        caplog.clear()  # a bigger batch and fewer actors change nothing: every phase is reused
        run(load_config(base={**base, "classify": {"batch_size": 64, "max_actors": 1}}))
        assert state.phase("score")["updated"] == records["score"]["updated"]
        assert not [r for r in caplog.records if "rerunning" in r.getMessage()]

        caplog.clear()
        second = run(load_config(base={**base, "classify": {"mode": "fasttext_only"}}))
    finally:
        ray.shutdown()
    assert second["score"]["mode"] == "fasttext_only"
    assert json.loads((out / "stats.json").read_text())["score"]["mode"] == "fasttext_only"
    reruns = [r.getMessage() for r in caplog.records if "rerunning" in r.getMessage()]
    assert reruns == ["score: rerunning: classify.mode changed ('cascade' -> 'fasttext_only')"], reruns
    for phase in ("seeds", "extract"):  # neither depends on classify.*: not redone
        assert state.phase(phase)["fingerprint"] == records[phase]["fingerprint"]
    assert {k: u["settings"] for k, u in state.units("extract").items()} == units
    assert "0 to read" in "\n".join(r.getMessage() for r in caplog.records if r.name == "raypipe.phases.extract")
    score = state.phase("score")
    assert score["fingerprint"] != records["score"]["fingerprint"] and score["upstream"]["extract"]
    assert main(["status", str(out)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("score"))
    assert "rerun_because=classify.mode changed" in line and f"fingerprint={score['fingerprint']}" in line


@pytest.mark.parametrize(
    ("change", "phases"),
    [
        ({"classify": {"mode": "fasttext_only"}}, {"score"}),
        ({"dedup": {"threshold": 0.8}}, {"clean"}),
        ({"quality": {"min_words": 10}}, {"extract"}),
        ({"mix": {"ratio": {"agent": 2, "text": 1}}}, {"shard"}),
        ({"retrieve": {"model": "other"}}, {"seeds", "score"}),
        ({"output": "/elsewhere", "ray": {"num_cpus": 1}, "storage": {"retries": 1}}, set()),
        ({"classify": {"batch_size": 8, "num_cpus": 1}, "dedup": {"workers": 3, "memory_budget_mb": 64}}, set()),
        ({"tokenizer": {"max_actors": 2}, "shards": {"writer_tasks": 4}, "extract": {"batch_size": 1}}, set()),
    ],
)
def test_phase_settings_hold_only_the_keys_that_change_output(change, phases):
    from raypipe.config import PHASE_KEYS, load_config

    base = {"input": "s3://b/in", "output": "s3://b/out"}
    before, after = load_config(base=base), load_config(base={**base, **change})
    changed = {p for p in PHASE_KEYS if before.phase_settings(p) != after.phase_settings(p)}
    assert changed == phases


def test_a_redone_phase_makes_every_later_phase_stale(tmp_path):
    from raypipe.config import load_config

    cfg = load_config(base={"input": "s3://b/in", "output": str(tmp_path)})
    state = RunState(OutputStore(str(tmp_path), StorageConfig()))
    for phase in ("seeds", "extract", "score", "clean", "shard"):
        state.set_phase(phase, "done", summary={})
        state.stamp(phase, cfg.phase_settings(phase), None)
    assert all(state.stale_reason(p, cfg.phase_settings(p)) is None for p in ("seeds", "score", "clean", "shard"))

    changed = cfg.model_copy(update={"classify": cfg.classify.model_copy(update={"rounds": 3})})
    reason = state.stale_reason("score", changed.phase_settings("score"))
    assert reason == "classify.rounds changed (2 -> 3)"
    state.invalidate("score", reason)
    assert state.finished("score") is None  # the phase function then runs instead of skipping
    state.set_phase("score", "done", summary={})
    state.stamp("score", changed.phase_settings("score"), reason)
    clean = state.stale_reason("clean", cfg.phase_settings("clean"))
    assert clean == "its input, the score phase's output, changed (score: classify.rounds changed (2 -> 3))"
    assert state.stale_reason("seeds", cfg.phase_settings("seeds")) is None
