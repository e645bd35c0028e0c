"""Malformed seed input fails loudly with file, line and reason; schemas absent from ../shared load too."""

from __future__ import annotations

import gzip
import json

import pytest

from raypipe.config import SeedsConfig, StorageConfig
from raypipe.seeds import LoadReport, SeedFormatError, load_seed_file, load_seeds


def _load(path, on_error="raise"):
    report = LoadReport()
    return load_seed_file(str(path), StorageConfig(), report, on_error), report


def test_bad_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "docs.jsonl"
    good = json.dumps({"api_name": "m", "api_call": "m()", "framework": "x"})
    path.write_text(f'{good}\n{good}\n{{"api_name": oops}}\n')
    with pytest.raises(SeedFormatError, match=r"docs\.jsonl line 3: invalid JSON"):
        _load(path)


def test_missing_field_and_unknown_schema(tmp_path):
    path = tmp_path / "zoo.json"
    path.write_text(json.dumps([{"api_name": "ok", "api_call": "GET /a"}, {"api_name": "no call", "api_call": ""}]))
    with pytest.raises(SeedFormatError, match=r"zoo\.json record 1: record lacks required field\(s\) api_call"):
        _load(path)
    path.write_text(json.dumps([{"colour": "red", "size": 3}]))
    with pytest.raises(SeedFormatError, match=r"record 0: unrecognized seed schema \(keys: colour, size\)"):
        _load(path)


def test_collect_mode_reports_and_keeps_the_rest(tmp_path):
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps([{"api_name": "a", "api_call": "GET /a"}, {"nothing": 1}, "text"]))
    seeds, report = _load(path, on_error="collect")
    assert len(seeds) == 1
    assert [e.where for e in report.errors] == ["record 1", "record 2"]
    assert "expected a JSON object" in report.errors[1].message


def test_lenient_json_reports_each_repair(tmp_path):
    path = tmp_path / "almost.json.gz"
    text = (
        '[\n {"api_name": "a", "api_call": "GET /a",},\n'
        ' {"api_name": "b", "api_call": "GET /b"}\n'
        ' {"api_name": "c",\n "api_call": "GET /c"}\n'
    )
    path.write_bytes(gzip.compress(text.encode()))
    seeds, report = _load(path)
    assert len(seeds) == 3
    assert [r.message for r in report.repairs] == [
        "removed trailing comma at line 2",
        "inserted missing comma at line 4",
        "appended ']' to close brackets left open at end of file",
    ]
    path.write_text('[{"api_name": "a", "api_call": @}]')
    with pytest.raises(SeedFormatError, match=r"line 1 column 32: invalid JSON \(Expecting value\)"):
        _load(path)


def test_not_utf8_and_corrupt_gzip(tmp_path):
    bad = tmp_path / "latin.jsonl"
    bad.write_bytes(b'{"a": 1}\n{"b": "caf\xe9"}\n')
    with pytest.raises(SeedFormatError, match=r"latin\.jsonl line 2: not UTF-8"):
        _load(bad)
    broken = tmp_path / "cut.json.gz"
    broken.write_bytes(gzip.compress(b'[{"api_name": "a"}]')[:-6])
    with pytest.raises(SeedFormatError, match="gzip stream is corrupt"):
        _load(broken)


def test_xlam_openai_toolbench_tool_and_api_bank_turns(tmp_path):
    tools = [{"name": "get_weather", "description": "Weather now", "parameters": {"city": {"type": "str"}}}]
    (tmp_path / "xlam.json").write_text(
        json.dumps(
            [
                {
                    "id": 1,
                    "query": "Weather in Oslo?",
                    "tools": json.dumps(tools),
                    "answers": json.dumps([{"name": "get_weather", "arguments": {"city": "Oslo"}}]),
                }
            ]
        )
    )
    messages = {
        "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 3}'},
            {"role": "assistant", "content": "It is 3 degrees."},
        ],
        "tools": [{"type": "function", "function": tools[0]}],
    }
    (tmp_path / "chat.jsonl").write_text(json.dumps(messages) + "\n")
    tool = {
        "tool_name": "Weather",
        "tool_description": "Forecasts",
        "api_list": [
            {
                "name": "now",
                "description": "Current",
                "method": "GET",
                "url": "https://w/now",
                "required_parameters": [{"name": "city", "type": "STRING", "description": "City"}],
            }
        ],
    }
    (tmp_path / "tool.json").write_text(json.dumps(tool))
    turns = [
        {"role": "User", "text": "Weather?"},
        {
            "role": "API",
            "api_name": "get_weather",
            "param_dict": {"city": "Oslo"},
            "result": {"output": {"temp": 3}, "exception": None},
        },
        {"role": "AI", "text": "3 degrees."},
    ]
    (tmp_path / "dialog.jsonl").write_text("\n".join(json.dumps(t) for t in turns))
    df = load_seeds(SeedsConfig(sources=[str(tmp_path)], harvest_modules=[]), StorageConfig())
    schemas = df.attrs["load_report"]["records_by_schema"]
    assert schemas == {"xlam": 1, "openai_messages": 1, "toolbench_tool": 1, "api_bank_dialogue": 1}
    call = 'Function call: {"name": "get_weather", "arguments": {"city": "Oslo"}}'
    trajectories = df[df.kind == "trajectory"]
    assert len(trajectories) == 3 and all(call in t for t in trajectories.text)
    chat = trajectories[trajectories.schema == "openai_messages"].text.iloc[0]
    assert (
        chat.index("User: Weather")
        < chat.index(call)
        < chat.index('Observation: {"temp": 3}')
        < chat.index("Final answer: It is 3")
    )
    doc = df[df.schema == "toolbench_tool"].text.iloc[0]
    assert doc.startswith("Weather: now") and "GET https://w/now" in doc and "city (string, required): City" in doc
    assert (df[df.schema == "function_spec"].apis.map(tuple) == ("get_weather",)).all()


def test_normalized_seed_records_pass_through(tmp_path):
    crawl = tmp_path / "crawl" / "seeds"
    crawl.mkdir(parents=True)
    record = {
        "id": "crawl-0123",
        "kind": "api_doc",
        "text": "requests.get(url)\n\nSends a GET request.",
        "source": "crawl:docs.python-requests.org",
        "license": None,
        "apis": ["requests.get"],
    }
    (crawl / "api_docs.jsonl").write_text(json.dumps(record) + "\n" + json.dumps({**record, "kind": "blog"}) + "\n")
    df = load_seeds(SeedsConfig(sources=[str(tmp_path)], harvest_modules=[], on_error="collect"), StorageConfig())
    assert df[["id", "source", "schema"]].values.tolist() == [
        ["crawl-0123", "crawl:docs.python-requests.org", "seed_record"]
    ]
    assert "line 2: seed record kind must be api_doc or trajectory" in df.attrs["load_report"]["errors"][0]
