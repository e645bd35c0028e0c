"""Reading configured datasets (the code stream, a text dataset) as documents with stable ids."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raypipe.config import DatasetSourceConfig, StorageConfig
from raypipe.store.storage import StorageError
from raypipe.streams import DOC_SCHEMA, dataset_file_names, list_dataset_files, read_dataset_file


def read_all(uri: str, stream: str, **kw) -> pd.DataFrame:
    src = DatasetSourceConfig(uri=uri, batch_rows=500, **kw)
    return pd.concat(list(read_dataset_file(uri, src, stream, StorageConfig())), ignore_index=True)


def test_code_jsonl_gz_rows_become_documents_with_stable_ids(shared_data):
    uri = str(shared_data / "mix" / "code" / "pypi_python_code.jsonl.gz")
    docs = read_all(uri, "code", url_field="path")
    assert list(docs.columns) == DOC_SCHEMA.names
    assert len(docs) == 1754
    assert docs["doc_id"].tolist() == [f"pypi_python_code:{i}" for i in range(1754)]
    with gzip.open(uri, "rt") as f:
        first = json.loads(f.readline())
    assert (docs["text"][0], docs["url"][0], docs["license"][0]) == (first["text"], first["path"], first["license"])
    assert set(docs["stream"]) == {"code"} and set(docs["source"]) == {"pypi_python_code"}


def test_text_lines_and_directories(shared_data):
    folder = shared_data / "mix" / "text"
    files = list_dataset_files(str(folder), StorageConfig())
    assert [f.rsplit("/", 1)[-1] for f in files] == ["c4_demo.jsonl.gz", "wiki_demo.txt.gz"]
    wiki = read_all(files[1], "text", name="wikipedia", license="CC BY-SA")
    assert len(wiki) == 30 and wiki["text"].str.len().min() > 1000
    assert wiki["url"][3] == f"{files[1]}#3" and set(wiki["license"]) == {"CC BY-SA"}
    with pytest.raises(StorageError, match="dataset not found"):
        list_dataset_files(str(folder / "missing.jsonl"), StorageConfig())


def test_parquet_with_id_field_and_whole_records_as_text(shared_data, tmp_path):
    with gzip.open(shared_data / "mix" / "text" / "c4_demo.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f]
    table = pa.table({"id": [f"c4-{i}" for i in range(len(rows))], "text": [r["text"] for r in rows]})
    pq.write_table(table, tmp_path / "c4.parquet", row_group_size=64)
    docs = read_all(str(tmp_path / "c4.parquet"), "text", id_field="id")
    assert docs["doc_id"].tolist() == table["id"].to_pylist()
    assert docs["text"].tolist() == table["text"].to_pylist()

    api = read_all(str(shared_data / "seeds" / "gorilla_api_docs" / "torchhub_api.jsonl.gz"), "agent", text_field=None)
    assert len(api) == 94 and json.loads(api["text"][0])["api_name"]


def test_same_named_files_in_different_folders_get_distinct_stable_ids(shared_data, tmp_path):
    """``python/part-0`` and ``java/part-0`` collided when ids were built from the basename."""
    with gzip.open(shared_data / "mix" / "code" / "pypi_python_code.jsonl.gz", "rt") as f:
        lines = [line for _, line in zip(range(6), f, strict=False)]
    for root in ("bucket-a", "bucket-b"):  # the same dataset under two prefixes: a bucket move
        for lang, part in (("python", lines[:3]), ("java", lines[3:])):
            (tmp_path / root / lang).mkdir(parents=True)
            with gzip.open(tmp_path / root / lang / "part-0.jsonl.gz", "wt") as out:
                out.writelines(part)
    ids = {}
    for root in ("bucket-a", "bucket-b"):
        names = dataset_file_names(str(tmp_path / root), StorageConfig())
        assert sorted(names.values()) == ["java/part-0", "python/part-0"]
        src = DatasetSourceConfig(uri=str(tmp_path / root))
        docs = pd.concat(
            [f for uri, name in names.items() for f in read_dataset_file(uri, src, "code", StorageConfig(), name)]
        )
        ids[root] = sorted(docs["doc_id"])
        assert docs["doc_id"].is_unique and len(docs) == 6
    assert (
        ids["bucket-a"]
        == ids["bucket-b"]
        == sorted(f"{lang}/part-0:{i}" for lang in ("java", "python") for i in range(3))
    )
    glob = dataset_file_names(str(tmp_path / "bucket-a" / "*" / "part-*.jsonl.gz"), StorageConfig())
    assert sorted(glob.values()) == ["java/part-0", "python/part-0"]
    with pytest.raises(StorageError, match="share the document ids"):
        dataset_file_names(
            [str(tmp_path / "bucket-a" / "python"), str(tmp_path / "bucket-a" / "java")], StorageConfig()
        )
