"""Completion records in batches (issue 14, item 4): the journal is read in a handful of objects,
the last entry of a unit wins, a batch not yet written is redone, and the one-object-per-record
layout of older outputs is still read and is folded in by a compaction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raypipe.config import StorageConfig
from raypipe.phases.extract import ExtractTracker
from raypipe.store.state import RunState
from raypipe.store.storage import OutputStore
from raypipe.store.warc import file_stem


def state_at(path: Path | str) -> RunState:
    return RunState(OutputStore(str(path), StorageConfig()))


def journal_objects(state: RunState, phase: str = "extract") -> list[str]:
    return [k for k in state.store.list(f"_state/{phase}/journal")]


def test_records_are_written_in_batches_and_read_back(tmp_path):
    state = state_at(tmp_path)
    journal = state.journal("extract", every=4, every_s=3600)
    assert journal.done("a", {"documents": 1})  # the first entry is written at once: progress shows early
    for unit in "bcd":
        assert not journal.done(unit, {"documents": 1})
    assert set(state.units("extract")) == {"a"}  # b, c, d wait in the batch
    assert journal.done("e", {"documents": 2})  # the fourth waiting entry writes the batch
    assert set(state.units("extract")) == {"a", "b", "c", "d", "e"}
    assert len(journal_objects(state)) == 2

    again = state.journal("extract", every=100, every_s=3600)  # a later run numbers after them
    again.failed("c", {"uri": "s3://in/c.warc.gz", "error": "503"})
    again.removed("d")
    again.flush()
    assert set(state.units("extract")) == {"a", "b", "e"}
    assert state.failures("extract") == {"c": {"uri": "s3://in/c.warc.gz", "error": "503"}}
    again.done("c", {"documents": 3})
    again.flush()
    assert state.units("extract")["c"] == {"documents": 3} and not state.failures("extract")
    assert len(journal_objects(state)) == 5


def test_a_batch_not_written_when_the_driver_dies_is_redone(tmp_path):
    state = state_at(tmp_path)
    journal = state.journal("extract", every=1000, every_s=3600)
    journal.done("a", {"documents": 1})
    journal.done("b", {"documents": 1})
    del journal  # the driver dies: b's entry was never written
    assert set(state_at(tmp_path).units("extract")) == {"a"}


def test_older_per_record_layout_is_read_and_compacted(tmp_path):
    state = state_at(tmp_path)
    units = tmp_path / "_state" / "extract" / "units"
    failed = tmp_path / "_state" / "extract" / "failed"
    units.mkdir(parents=True)
    failed.mkdir(parents=True)
    for name in ("old1", "old2", "old3"):
        (units / f"{name}.json").write_text(json.dumps({"documents": 5, "name": name}))
    (failed / "broken.json").write_text(json.dumps({"uri": "s3://in/broken.warc.gz", "error": "reset"}))
    journal = state.journal("extract", every=1000, every_s=3600)
    journal.removed("old3")
    journal.done("new", {"documents": 7})
    journal.flush()

    expected_units = {"old1": {"documents": 5, "name": "old1"}, "old2": {"documents": 5, "name": "old2"}}
    expected_units["new"] = {"documents": 7}
    assert state.units("extract") == expected_units
    assert set(state.failures("extract")) == {"broken"}

    state.compact("extract")
    assert state.units("extract") == expected_units and set(state.failures("extract")) == {"broken"}
    assert len(journal_objects(state)) == 1
    assert not units.exists() or not list(units.iterdir())
    assert not failed.exists() or not list(failed.iterdir())


def test_compaction_interrupted_before_its_deletes_reads_the_same(tmp_path):
    state = state_at(tmp_path)
    for unit in "abc":
        journal = state.journal("extract", every=1, every_s=3600)
        journal.done(unit, {"documents": ord(unit)})
    journal = state.journal("extract", every=1, every_s=3600)
    journal.failed("b", {"uri": "b", "error": "x"})
    before = (state.units("extract"), state.failures("extract"))
    keys = journal_objects(state)
    saved = {k: state.store.read_bytes(k) for k in keys}
    state.compact("extract")
    assert journal_objects(state) == keys[-1:]
    for key, data in saved.items():  # as if the deletes after the merged write never happened
        if key != keys[-1]:
            state.store.write_bytes(key, data)
    assert (state.units("extract"), state.failures("extract")) == before


def test_compaction_below_its_threshold_costs_one_listing(tmp_path):
    state = state_at(tmp_path)
    for unit in "ab":
        state.journal("extract", every=1, every_s=3600).done(unit, {})
    state.compact("extract", min_objects=64)
    assert len(journal_objects(state)) == 2
    state.compact("extract")
    assert len(journal_objects(state)) == 1 and set(state.units("extract")) == {"a", "b"}


def summary(uri: str, docs: int, part: str) -> dict:
    stats = {"records": docs, "html_responses": docs, "skipped": {}, "errors": []}
    return {
        "source_file": uri,
        "rows": docs,
        "file_stats": json.dumps(stats),
        "part": part,
        "drops": json.dumps({"kept": docs}),
        "languages": json.dumps({"en": docs}),
    }


def test_tracker_records_files_in_batches_and_progress_with_them(tmp_path):
    state = state_at(tmp_path)
    tracker = ExtractTracker(state, total_files=4, already_done=0, record_every=3, record_every_s=3600)
    tracker.update(summary("s3://in/a.warc.gz", 2, "extracted/a/part-1.parquet"))
    assert len(state.units("extract")) == 1 and state.phase("extract")["files_done"] == 1
    tracker.update(summary("s3://in/b.warc.gz", 2, "extracted/b/part-1.parquet"))
    tracker.update(summary("s3://in/c.warc.gz", 2, "extracted/c/part-1.parquet"))
    assert len(state.units("extract")) == 1 and state.phase("extract")["files_done"] == 1
    tracker.flush()
    assert len(state.units("extract")) == 3 and state.phase("extract")["files_done"] == 3


def failed(row: dict, error: str) -> dict:
    return {**row, "file_stats": json.dumps({**json.loads(row["file_stats"]), "failed": error})}


def test_a_failed_file_loses_its_parts_and_nothing_else_costs_a_call(tmp_path, monkeypatch):
    state = state_at(tmp_path)
    tracker = ExtractTracker(state, total_files=3, already_done=0, record_every=100, record_every_s=3600)
    deleted: list[list[str]] = []
    real = state.store.delete_keys
    monkeypatch.setattr(state.store, "delete_keys", lambda keys: (deleted.append(list(keys)), real(keys)))
    tracker.update(failed(summary("s3://in/a.warc.gz", 0, ""), "StorageError: 503"))
    assert deleted == [] and tracker.failed == {"s3://in/a.warc.gz": "StorageError: 503"}

    part = "extracted/b/part-1.parquet"
    state.store.write_bytes(part, b"partial")
    kept = "extracted/c/part-1.parquet"
    state.store.write_bytes(kept, b"whole")
    tracker.update(failed(summary("s3://in/b.warc.gz", 1, part), "StorageError: reset"))
    tracker.update(summary("s3://in/c.warc.gz", 1, kept))
    assert deleted == [[part]] and not (tmp_path / part).exists() and (tmp_path / kept).exists()
    tracker.flush()
    assert sorted(f["error"] for f in state.failures("extract").values()) == [
        "StorageError: 503",
        "StorageError: reset",
    ]
    assert set(state.units("extract")) == {file_stem("s3://in/c.warc.gz")}


@pytest.mark.integration
def test_journal_on_the_s3_server(s3_server, s3_env):
    s3_server.create_bucket("journal")
    state = state_at("s3://journal/run")
    journal = state.journal("extract", every=50, every_s=3600)
    for i in range(120):
        journal.done(f"unit-{i:03d}", {"documents": i})
    journal.flush()
    assert len(journal_objects(state)) == 4  # the first entry, two full batches and the rest
    units = state.units("extract")
    assert len(units) == 120 and units["unit-119"] == {"documents": 119}
    state.compact("extract")
    assert len(journal_objects(state)) == 1 and state.units("extract") == units
