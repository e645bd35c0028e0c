"""Extracted parts (issue 14, item 4), on real local Ray and real WARCs: one part per input file,
split only beyond ``extract.part_mb``, never one per read batch; the same names and bytes on
every run (parts are named by content, so a redone file rewrites the same keys)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from raypipe.config import load_config
from raypipe.pipeline import run
from raypipe.store.warc import file_stem

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def extract(inputs: list[str], out: Path, **settings: object) -> dict[str, dict[str, bytes]]:
    """Run the extract phase; returns every file's parts: stem -> {part name: bytes}."""
    cfg = load_config(
        base={
            "input": inputs,
            "output": str(out),
            "phases": ["extract"],
            "ray": {"num_cpus": 2, "progress_bars": False},
            "extract": {"batch_size": 16, **settings},
        }
    )
    run(cfg)
    return {d.name: {p.name: p.read_bytes() for p in d.glob("*.parquet")} for d in (out / "extracted").iterdir()}


def doc_ids(parts: dict[str, bytes], folder: Path) -> list[str]:
    ids = []
    for name in parts:
        ids += pq.read_table(folder / name, columns=["doc_id"]).column("doc_id").to_pylist()
    return sorted(ids)


def test_one_part_per_file_split_only_beyond_the_part_size(shared_data, tmp_path, local_ray):
    big = tmp_path / "in" / "web-0000x.warc.gz"  # four record-compressed WARCs, one after another
    big.parent.mkdir()
    big.write_bytes(b"".join((shared_data / "warc" / "built" / f"web-0000{i}.warc.gz").read_bytes() for i in range(4)))
    small = shared_data / "warc" / "archive" / "dolma_sample-0000.warc.gz"
    inputs = [str(big), str(small)]

    whole = extract(inputs, tmp_path / "whole")
    assert {stem: len(parts) for stem, parts in whole.items()} == {file_stem(str(big)): 1, file_stem(str(small)): 1}

    split = extract(inputs, tmp_path / "split", part_mb=1)
    again = extract(inputs, tmp_path / "again", part_mb=1)
    # The same part names (hashes of their document ids) on a rerun; the bytes differ only in the
    # timing column extract_ms.
    assert {s: sorted(p) for s, p in split.items()} == {s: sorted(p) for s, p in again.items()}
    assert len(split[file_stem(str(big))]) > 1 and len(split[file_stem(str(small))]) == 1
    for stem in whole:  # the same pages, however the file's parts are cut
        assert doc_ids(split[stem], tmp_path / "split" / "extracted" / stem) == doc_ids(
            whole[stem], tmp_path / "whole" / "extracted" / stem
        )
    rows = [
        pq.read_metadata(tmp_path / "split" / "extracted" / file_stem(str(big)) / n).num_rows
        for n in split[file_stem(str(big))]
    ]
    assert sum(rows) > 16 * len(rows)  # parts hold many extraction batches (16 pages each), not one


def test_extraction_runs_in_the_read_task_of_its_file(shared_data, tmp_path, local_ray, capsys):
    """One part per file holds because no block mixes files: Ray Data fuses reading, extraction and
    the verdict into one task per file (a batch size on extraction would keep it from doing so)."""
    from raypipe.phases.extract import extract_dataset

    cfg = load_config(base={"input": "unused", "output": str(tmp_path / "out")})
    ds = extract_dataset([str(shared_data / "warc" / "archive" / "dolma_sample-0000.warc.gz")], cfg)
    ds.explain()
    optimized = capsys.readouterr().out.split("Physical Plan (Optimized)")[-1]
    assert "TaskPoolMapOperator[ReadWarc->MapBatches(_stage_task)->MapBatches(_stage_task)]" in optimized, optimized
