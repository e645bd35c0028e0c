"""The clean phase sizes its shuffles from the fingerprint files' footers (issue 14, item 4): it
reads them in parallel, and the sizes are those the footers hold."""

from __future__ import annotations

import threading
import time

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from raypipe.phases.clean import _column_bytes


class SlowLocal(LocalFileSystem):
    """A local filesystem whose opens take a while, counting how many run at once."""

    cachable = False

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.active = self.peak = 0

    def _open(self, path, mode="rb", **kwargs):
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        time.sleep(0.05)
        with self.lock:
            self.active -= 1
        return super()._open(path, mode, **kwargs)


def test_footers_are_read_in_parallel_and_summed(tmp_path):
    folder = tmp_path / "fingerprints"
    folder.mkdir()
    for i in range(12):
        table = pa.table({"doc_id": [f"{i}-{j}" for j in range(50 + i)], "text": ["word " * (i + 1)] * (50 + i)})
        pq.write_table(table, folder / f"part-{i:02d}.parquet", row_group_size=20)
    expected = {"doc_id": 0, "text": 0}
    for path in sorted(folder.iterdir()):
        meta = pq.read_metadata(path)
        for g in range(meta.num_row_groups):
            for c in range(meta.row_group(g).num_columns):
                col = meta.row_group(g).column(c)
                expected[col.path_in_schema] += col.total_uncompressed_size
    slow = SlowLocal()
    fs = pafs.PyFileSystem(pafs.FSSpecHandler(slow))
    assert _column_bytes(fs, str(folder), ["doc_id"]) == expected["doc_id"] > 0
    assert _column_bytes(fs, str(folder), None) == expected["doc_id"] + expected["text"]
    assert slow.peak > 1
