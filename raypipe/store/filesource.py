"""One Ray Data read task per file, for every file-backed input of the pipeline.

Why our own datasource instead of ``ray.data.read_parquet`` and friends: Ray's file readers plan a
``ListFiles`` task that always asks for one whole CPU, whatever ``num_cpus`` the read asks for.
When the same plan holds actor pools (the fastText scorer, the seed retriever, the writers), their
fractional CPUs are taken at start and the listing task can never be scheduled on a 2-CPU node:
the plan waits forever with every process idle. We list on the driver instead (one cheap call)
and give each file a read task that asks for ``LIGHT_TASK_CPUS``. One task per file is also the
unit the extract phase resumes by.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raypipe.stage import LIGHT_TASK_CPUS
from raypipe.store.storage import RetryPolicy, is_retriable

T = TypeVar("T")

ReadFile = Callable[[str], Iterator[pa.Table]]


def per_file_dataset(
    uris: list[str],
    read_file: ReadFile,
    name: str,
    schema: pa.Schema | None = None,
    num_cpus: float = LIGHT_TASK_CPUS,
) -> Any:
    """A Ray Dataset whose read task ``i`` yields ``read_file(uris[i])``'s Arrow tables.

    ``name`` names the read tasks (``Read<name>`` in Ray's dashboard, progress and process titles).
    ``num_cpus`` per read task: light by default; a reader that does real work per byte (WARC
    inflation and parsing) asks for a whole CPU so that the scheduler does not oversubscribe cores.
    """
    import ray.data
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class PerFileDatasource(Datasource):
        def get_name(self) -> str:
            return name

        def estimate_inmemory_data_size(self) -> int | None:
            return None

        def get_read_tasks(self, parallelism: int, **_: Any) -> list[ReadTask]:
            tasks = []
            for uri in uris:

                def read_fn(uri: str = uri) -> Iterator[pa.Table]:
                    yield from read_file(uri)

                meta = BlockMetadata(num_rows=None, size_bytes=None, input_files=[uri], exec_stats=None)
                tasks.append(ReadTask(read_fn, meta, schema=schema))
            return tasks

    return ray.data.read_datasource(PerFileDatasource(), override_num_blocks=max(1, len(uris)), num_cpus=num_cpus)


def retry_transfer(fn: Callable[[], T], policy: RetryPolicy | None = None) -> T:
    """``fn()`` (a read of one of our own objects), tried again when the transfer breaks.

    S3 requests are retried by botocore, but a body cut mid-transfer surfaces while pyarrow reads
    it, after botocore is done; this is the one loop for that case (transient errors only).
    """
    policy = policy or RetryPolicy()
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - classified below, re-raised unless transient
            if attempt >= policy.retries or not is_retriable(e):
                raise
            time.sleep(policy.delay(attempt))
            attempt += 1


def _read_whole(filesystem: pafs.FileSystem, path: str, policy: RetryPolicy | None = None) -> bytes:
    """One of our own parquet parts, whole (parts are a few MB), so that a broken read starts over
    instead of failing the task with half a file parsed."""

    def read() -> bytes:
        with filesystem.open_input_file(path) as f:
            return f.read()

    return retry_transfer(read, policy)


def parquet_files_dataset(
    paths: list[str], filesystem: pafs.FileSystem, columns: list[str] | None = None, batch_rows: int = 4096
) -> Any:
    """A Ray Dataset over parquet files (paths on ``filesystem``), streamed ``batch_rows`` at a time."""
    if not paths:
        raise ValueError("no parquet files to read")

    def read_file(path: str) -> Iterator[pa.Table]:
        with pa.BufferReader(_read_whole(filesystem, path)) as f:
            parquet = pq.ParquetFile(f)
            empty = True
            for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns):
                empty = False
                yield pa.Table.from_batches([batch])
            if empty:
                yield parquet.schema_arrow.empty_table().select(columns or parquet.schema_arrow.names)

    return per_file_dataset(sorted(paths), read_file, "Parquet")


def parquet_dataset(path: str, filesystem: pafs.FileSystem, columns: list[str] | None = None) -> Any:
    """``parquet_files_dataset`` over every ``.parquet`` file below a directory."""
    selector = pafs.FileSelector(path.rstrip("/"), recursive=True)
    files = [i.path for i in filesystem.get_file_info(selector) if i.path.endswith(".parquet")]
    if not files:
        raise ValueError(f"no parquet files under {path}")
    return parquet_files_dataset(files, filesystem, columns)
