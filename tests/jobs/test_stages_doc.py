"""docs/stages.md does what it says: its filter file and config, as written there, run in a real
``jobs/build_forge.py`` job on a real WARC file; and its near-dedup pipeline runs as shown."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from tests.conftest import REPO
from tests.support.forge_runs import run_job, short_tmp

DOC = REPO / "docs" / "stages.md"


def code_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_documented_filter_drops_pages_in_a_real_job(shared_data: Path, tmp_path: Path) -> None:
    module = next(b for b in code_blocks("python") if b.startswith("# url_pattern.py"))
    config = next(yaml.safe_load(b) for b in code_blocks("yaml") if "filters:" in b)
    filters = config["extract"]["filters"]
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "url_pattern.py").write_text(module)
    pattern = re.compile(filters[0]["options"]["pattern"])

    with short_tmp() as work:
        out = work / "out"
        sets = [
            f"input={shared_data / 'warc' / 'built' / 'web-00001.warc.gz'}",
            f"output={out}",
            "phases=[extract]",
            "extract.languages=[]",  # these pages are mostly German: let them reach the filter
            f"extract.filters={json.dumps(filters)}",
        ]
        run_job(sets, {"PYTHONPATH": f"{plugins}:{REPO}"}, work / "job")
        rows = pq.read_table(out / "extracted").to_pylist()
        stats = json.loads((out / "stats.json").read_text())

    assert len(rows) == 110
    assert all(r["url_blocked"] == bool(pattern.search(r["url"])) for r in rows)  # the tag, on every page
    dropped = [r for r in rows if r["drop_reason"] == "url_pattern"]
    assert dropped and all(pattern.search(r["url"]) for r in dropped)
    assert not [r for r in rows if r["drop_reason"] is None and pattern.search(r["url"])]  # none kept
    assert stats["extract"]["drop_reasons"]["url_pattern"] == len(dropped)


def test_the_documented_near_dedup_pipeline(local_ray, shared_data: Path, tmp_path: Path) -> None:
    from tests.support.planted import planted_corpus

    corpus = planted_corpus(shared_data, unique=30, exact_clusters=0, near_clusters=5)
    (tmp_path / "my_docs").mkdir()
    corpus[["doc_id", "text"]].to_parquet(tmp_path / "my_docs" / "part-0.parquet")
    block = next(b for b in code_blocks("python") if "near_duplicates" in b)
    script = block.replace('"my_docs/"', repr(str(tmp_path / "my_docs"))).replace(
        '"my_docs_dedup/"', repr(str(tmp_path / "my_docs_dedup"))
    )
    exec(compile(script, str(DOC), "exec"), {})  # noqa: S102 - the documented snippet, as written
    kept = pq.read_table(tmp_path / "my_docs_dedup").to_pandas()
    clusters = corpus[corpus["kind"] == "near"].groupby("cluster")["doc_id"].apply(set)
    assert len(clusters) == 5
    for members in clusters:
        assert len(members & set(kept["doc_id"])) == 1  # one survivor per planted cluster
    singles = set(corpus.loc[corpus["kind"] == "unique", "doc_id"])
    assert singles <= set(kept["doc_id"])  # nothing distinct merged
