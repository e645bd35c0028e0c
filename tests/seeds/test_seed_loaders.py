"""Every seed loader on the real files in ../shared/data/seeds, counts checked independently."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from raypipe.config import SeedsConfig, StorageConfig
from raypipe.seeds import LoadReport, SeedSourceError, load_seed_file, load_seeds


def _load(path: Path, on_error: str = "raise") -> tuple[list[dict], LoadReport]:
    report = LoadReport()
    return load_seed_file(str(path), StorageConfig(), report, on_error), report


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in gzip.open(path, "rt") if line.strip()]


@pytest.fixture(scope="module")
def all_seeds(shared_data):
    cfg = SeedsConfig(
        sources=[str(shared_data / "seeds")],
        harvest_modules=[],
        license_manifest=str(shared_data / "MANIFEST.jsonl"),
    )
    return load_seeds(cfg, StorageConfig())


def test_gorilla_api_docs(shared_data):
    for path in sorted((shared_data / "seeds" / "gorilla_api_docs").glob("*.jsonl.gz")):
        raw = _lines(path)
        seeds, report = _load(path)
        assert report.records_by_schema == Counter({"gorilla_api": len(raw)})
        assert len(seeds) == len(raw)
        for rec, seed in zip(raw, seeds, strict=False):
            assert seed["kind"] == "api_doc" and seed["apis"][0] == rec["api_name"]
            assert rec["api_call"].strip() in seed["text"] and not seed["text"].lstrip().startswith("{")


def test_apizoo_strict_and_lenient_files(shared_data):
    lenient = {"Gmail_API", "KubernetesAPI", "KubernetesPodPodTemplateAPI", "Salesforce_API_in_REST_Format"}
    for path in sorted((shared_data / "seeds" / "gorilla_apizoo").glob("*.gz")):
        text = gzip.decompress(path.read_bytes()).decode()
        seeds, report = _load(path)
        # an independent count: every apizoo record has exactly one "api_name" key
        assert report.records_by_schema["apizoo"] == text.count('"api_name"'), path.name
        if path.name.split(".")[0] in lenient:
            assert report.repairs and all(str(path) in str(r) for r in report.repairs)
            assert any("line " in str(r) for r in report.repairs)
        else:
            assert report.repairs == [] and len(json.loads(text)) == report.records_by_schema["apizoo"]
        assert all(s["kind"] == "api_doc" and "Parameters" in s["text"] or s["text"] for s in seeds)


def test_raft_sample_and_apibench_train(shared_data):
    raft = shared_data / "seeds" / "gorilla_raft_sample" / "apizoo.json.gz"
    _, report = _load(raft)
    assert report.records_by_schema["apizoo"] == len(json.load(gzip.open(raft)))
    train = shared_data / "seeds" / "gorilla_apibench_train" / "torchhub_train.json.gz"
    seeds, report = _load(train)
    assert report.records_by_schema["apibench_train"] == len(_lines(train))
    trajectories = [s for s in seeds if s["kind"] == "trajectory"]
    assert len(trajectories) == len(_lines(train))
    assert all("Function call: torch.hub.load(" in s["text"] and "Final answer:" in s["text"] for s in trajectories)


def test_api_bank_lv3(shared_data):
    for path in sorted((shared_data / "seeds" / "api_bank_train").glob("*.json.gz")):
        raw = json.load(gzip.open(path))
        seeds, report = _load(path)
        assert report.records_by_schema["api_bank_lv3"] == len(raw)
        trajectories = [s for s in seeds if s["kind"] == "trajectory"]
        assert len(trajectories) == len(raw)
        assert all("User:" in s["text"] and "Function call:" in s["text"] for s in trajectories)
        assert "Generate an API request" not in trajectories[0]["text"]  # the shared template is left out
        assert any(s["schema"] == "api_bank_api" and "Parameters" in s["text"] for s in seeds)


def test_sharegpt_and_openai_messages(shared_data):
    fc = shared_data / "seeds" / "function_calling"
    for name in ("glaive_toolcall_en_demo.json.gz", "glaive_toolcall_zh_demo.json.gz"):
        raw = json.load(gzip.open(fc / name))
        seeds, report = _load(fc / name)
        assert report.records_by_schema["sharegpt"] == len(raw)
        calls = sum(t["from"] == "function_call" for r in raw for t in r["conversations"])
        rendered = [s for s in seeds if s["kind"] == "trajectory"]
        assert sum(s["text"].count("\n\nFunction call: {") for s in rendered) == calls
        for s in rendered:
            for line in s["text"].split("\n\n"):
                if line.startswith("Function call: "):
                    assert set(json.loads(line.removeprefix("Function call: "))) == {"name", "arguments"}
    raw = _lines(fc / "reason_tool_use_demo_50.jsonl.gz")
    seeds, report = _load(fc / "reason_tool_use_demo_50.jsonl.gz")
    assert report.records_by_schema["openai_messages"] == len(raw)
    parts = Counter(p["type"] for r in raw for m in r["messages"] for p in m["content"])
    text = "\n".join(s["text"] for s in seeds if s["kind"] == "trajectory")
    assert text.count("Thought: ") == parts["reasoning"]
    assert text.count("Function call: {") == parts["tool_call"]


def test_toolbench_answers_and_queries(shared_data):
    tb = shared_data / "seeds" / "toolbench_examples"
    answers = sorted(tb.glob("answer__*.json.gz"))
    with_paths = sum(bool(json.load(gzip.open(p))["answer_generation"].get("train_messages")) for p in answers)
    report = LoadReport()
    seeds = [s for p in answers for s in load_seed_file(str(p), StorageConfig(), report, "raise")]
    trajectories = [s for s in seeds if s["kind"] == "trajectory"]
    assert len(trajectories) == with_paths and report.records_by_schema["toolbench_answer"] == len(answers)
    assert sum(report.skipped.values()) == len(answers) - with_paths  # counted, never silent
    assert all("Function call: {" in s["text"] and "Observation:" in s["text"] for s in trajectories)
    assert all("You are AutoGPT" not in s["text"] for s in trajectories)
    for q in sorted(tb.glob("instruction__*.json.gz")):
        raw = json.load(gzip.open(q))
        seeds, _ = _load(q)
        endpoints = {(a["tool_name"], a["api_name"]) for r in raw for a in r["api_list"]}
        docs = {s["text"] for s in seeds if s["schema"] == "toolbench_tool"}
        assert len([s for s in seeds if s["kind"] == "trajectory"]) == len(raw)
        assert len(docs) <= len(endpoints) and all(any(f"{t}: {a}" in d for d in docs) for t, a in endpoints)


def test_library_docs_render_without_markup(shared_data):
    path = shared_data / "seeds" / "api_docs_pypi" / "python_library_docs.jsonl.gz"
    raw = _lines(path)
    seeds, report = _load(path)
    assert report.records_by_schema["library_doc"] == len(raw) == len(seeds)
    for rec, seed in zip(raw, seeds, strict=False):
        assert seed["license"] == rec["license"]
        assert ".. auto" not in seed["text"] and ":func:`" not in seed["text"]
    markupsafe = next(s for r, s in zip(raw, seeds, strict=False) if r["path"] == "docs/escaping.rst")
    assert {"escape", "Markup", "escape_silent", "soft_str"} <= set(markupsafe["apis"])


def test_load_seeds_whole_directory(shared_data, all_seeds):
    df = all_seeds
    files = [p for p in (shared_data / "seeds").rglob("*") if p.is_file()]
    report = df.attrs["load_report"]
    assert report["files"] == len(files) and report["errors"] == []
    assert df["id"].is_unique and df["text_hash"].is_unique and report["duplicates_removed"] > 0
    assert set(df["kind"]) == {"api_doc", "trajectory"}
    dirs = {p.name for p in (shared_data / "seeds").iterdir() if p.is_dir()}
    # the RAFT sample repeats apizoo records verbatim: exact dedup folds all of it into gorilla_apizoo
    assert set(df["source"]) == dirs - {"gorilla_raft_sample"}
    assert df["license"].notna().all()  # every shared seed file is in the manifest
    assert df["apis"].map(len).gt(0).mean() > 0.95


def test_benchmarks_are_refused(shared_data, tmp_path):
    with pytest.raises(SeedSourceError, match="benchmarks"):
        load_seeds(SeedsConfig(sources=[str(shared_data / "benchmarks")], harvest_modules=[]), StorageConfig())
    nested = tmp_path / "benchmarks" / "x"
    nested.mkdir(parents=True)
    (nested / "ok.jsonl").write_text('{"api_name": "a", "api_call": "a()", "framework": "f"}\n')
    with pytest.raises(SeedSourceError, match="benchmarks"):
        load_seeds(SeedsConfig(sources=[str(tmp_path / "*" / "x" / "ok.jsonl")], harvest_modules=[]), StorageConfig())
    with pytest.raises(SeedSourceError, match="benchmarks"):
        load_seeds(SeedsConfig(sources=[str(tmp_path)], harvest_modules=[]), StorageConfig())
