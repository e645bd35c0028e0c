"""Document datasets named in config, read as mix streams (the code stream, or a text dataset).

Why a reader of our own rather than ``ray.data.read_json``: every document needs an id that is
the same on every run however the files are split among workers, so one read task owns one file
and numbers its rows (``<file name>:<row>``), and all bytes go through ``raypipe.store.storage``.

The file name in an id is the file's path relative to the dataset root (the directory named in
config, the fixed part of a glob, or a single file's folder), without its extension:
``python/part-0`` and ``java/part-0`` are two names, where their basenames would collide. Relative
paths do not change when the dataset moves to another bucket or prefix, so ids stay stable.
"""

from __future__ import annotations

import gzip
import io
import json
import posixpath
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import pandas as pd
import pyarrow as pa

from raypipe.config import DatasetSourceConfig, MixConfig, StorageConfig
from raypipe.store.storage import StorageError, filesystem, open_input

DATASET_FILE = re.compile(r"\.(parquet|jsonl|jsonl\.gz|txt|txt\.gz)$")
DOC_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("url", pa.string()),
        ("text", pa.string()),
        ("stream", pa.string()),
        ("source", pa.string()),
        ("license", pa.string()),
    ]
)


def file_stem(uri: str) -> str:
    return DATASET_FILE.sub("", posixpath.basename(urlparse(uri).path))


def _glob_root(path: str) -> str:
    """The folder above a glob's first wildcard: the fixed part every match starts with."""
    first = min(path.index(ch) for ch in "*?[" if ch in path)
    return posixpath.dirname(path[:first])


def dataset_file_names(spec: str | list[str], storage: StorageConfig) -> dict[str, str]:
    """URI -> name (path relative to its dataset root, extension dropped) of every file a spec names.

    Raises when two files get the same name (e.g. a list of two folders that both hold
    ``part-0.jsonl.gz``): their document ids would collide.
    """
    found: dict[str, str] = {}
    for item in [spec] if isinstance(spec, str) else spec:
        fs, path = filesystem(item, storage)
        prefix = "s3://" if item.startswith("s3://") else ""
        if any(ch in path for ch in "*?["):
            root, matches = _glob_root(path), [m for m in fs.glob(path) if not fs.isdir(m)]
        elif fs.isdir(path):
            root = path.rstrip("/")
            matches = [p for p in fs.find(path) if DATASET_FILE.search(p) and "/." not in p]
        elif fs.exists(path):
            root, matches = posixpath.dirname(path), [path]
        else:
            raise StorageError(f"dataset not found: {item}")
        if not matches:
            raise StorageError(f"dataset has no .parquet/.jsonl(.gz)/.txt(.gz) files: {item}")
        for m in matches:
            found[prefix + m] = DATASET_FILE.sub("", m[len(root) :].lstrip("/"))
    names: dict[str, str] = {}
    for uri, name in sorted(found.items()):
        if name in names:
            raise StorageError(f"dataset files {names[name]} and {uri} would share the document ids {name}:<row>")
        names[name] = uri
    return {uri: name for name, uri in names.items()}


def list_dataset_files(spec: str | list[str], storage: StorageConfig) -> list[str]:
    """Sorted URIs of the parquet / JSONL / text-lines files a spec names (URI, glob, directory, list)."""
    return sorted(dataset_file_names(spec, storage))


def _records(uri: str, storage: StorageConfig, batch_rows: int) -> Iterator[list[dict[str, Any]]]:
    """Batches of raw records of one file, streamed (parquet by row group, text by line)."""
    if uri.endswith(".parquet"):
        import pyarrow.parquet as pq

        fs, path = filesystem(uri, storage)
        with fs.open(path, "rb") as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_rows):
                yield batch.to_pylist()
        return
    with open_input(uri, storage) as raw:
        stream = gzip.open(raw) if uri.endswith(".gz") else raw
        lines = io.TextIOWrapper(stream, encoding="utf-8")
        is_text = DATASET_FILE.search(uri).group(1).startswith("txt")
        batch: list[dict[str, Any]] = []
        for lineno, line in enumerate(lines, 1):
            if is_text:
                batch.append({"text": line.rstrip("\n")})
            elif line.strip():
                try:
                    batch.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise StorageError(f"{uri} line {lineno} is not JSON: {e.msg}") from None
            if len(batch) >= batch_rows:
                yield batch
                batch = []
        if batch:
            yield batch


def read_dataset_file(
    uri: str, src: DatasetSourceConfig, stream: str, storage: StorageConfig, name: str | None = None
) -> Iterator[pd.DataFrame]:
    """The documents of one file, in the shared document schema (``DOC_SCHEMA``); ids are
    ``<name>:<row>``, ``name`` being the file's name in its dataset (``dataset_file_names``)."""
    stem = file_stem(uri)
    name = name or stem
    source = src.name or stem
    row = 0
    for records in _records(uri, storage, src.batch_rows):
        out: dict[str, list[Any]] = {name: [] for name in DOC_SCHEMA.names}
        for rec in records:
            text = rec.get(src.text_field) if src.text_field else json.dumps(rec, sort_keys=True, ensure_ascii=False)
            doc_id = rec.get(src.id_field) if src.id_field else None
            url = rec.get(src.url_field) if src.url_field else None
            license_ = rec.get(src.license_field) if src.license_field else None
            out["doc_id"].append(str(doc_id) if doc_id is not None else f"{name}:{row}")
            out["url"].append(str(url) if url is not None else f"{uri}#{row}")
            out["text"].append(text if isinstance(text, str) else None)
            out["stream"].append(stream)
            out["source"].append(source)
            out["license"].append(str(license_) if license_ is not None else src.license)
            row += 1
        yield pd.DataFrame(out)


def configured_streams(mix: MixConfig, storage: StorageConfig) -> dict[str, Any]:
    """The streams the config names as datasets: ``code`` and, when set, ``text`` (Ray Datasets)."""
    named = {"code": mix.code, "text": mix.text}
    return {stream: dataset_stream(src, stream, storage) for stream, src in named.items() if src is not None}


def dataset_stream(src: DatasetSourceConfig, stream: str, storage: StorageConfig):
    """A Ray Dataset of the documents of a configured dataset: one read task per file."""
    from raypipe.store.filesource import per_file_dataset

    names = dataset_file_names(src.uri, storage)

    def read_file(uri: str) -> Iterator[pa.Table]:
        for frame in read_dataset_file(uri, src, stream, storage, names[uri]):
            yield pa.Table.from_pandas(frame, schema=DOC_SCHEMA, preserve_index=False)

    return per_file_dataset(sorted(names), read_file, "Documents", schema=DOC_SCHEMA)
