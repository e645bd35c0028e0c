"""Which loader reads a record: schema detection by the fields a record carries, and file parsing.

Seed files come as JSON lists, single JSON objects, JSON Lines (sometimes named ``.json``), gzip or
not, and a few are not strict JSON. Detection is per record, so a file mixing schemas still loads,
and a record no loader recognises is an error that lists its keys rather than a silent skip.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import raypipe.seeds.api_docs as api_docs
import raypipe.seeds.trajectories as trajectories
from raypipe.seeds.api_docs import Ctx
from raypipe.seeds.lenient_json import loads_lenient
from raypipe.seeds.records import SeedFormatError

Loader = Callable[[Mapping[str, Any], Ctx], "list[dict] | str"]


@dataclass(frozen=True)
class Schema:
    name: str
    matches: Callable[[Mapping[str, Any]], bool]
    load: Loader


def _has(*keys: str) -> Callable[[Mapping[str, Any]], bool]:
    return lambda r: all(k in r for k in keys)


def _is_api_bank_sample(r: Mapping[str, Any]) -> bool:
    return _has("instruction", "input", "output")(r) and "API-Request" in f"{r['instruction']}{r['input']}{r['output']}"


# Most specific first: e.g. APIBench records also carry ``api_call``, Gorilla docs also ``api_name``.
SCHEMAS: list[Schema] = [
    Schema("seed_record", _has("kind", "text", "source"), api_docs.normalized_seed),
    Schema("toolbench_answer", _has("answer_generation"), trajectories.toolbench_answer),
    Schema("apibench_train", _has("code", "api_call", "api_data"), trajectories.apibench_train),
    Schema(
        "gorilla_api",
        lambda r: _has("api_name", "api_call")(r) and ("domain" in r or "framework" in r),
        api_docs.gorilla_api,
    ),
    Schema("apizoo", _has("api_name", "api_call"), api_docs.apizoo),
    Schema("toolbench_query", _has("api_list", "query"), trajectories.toolbench_query),
    Schema("toolbench_tool", lambda r: "api_list" in r and ("tool_name" in r or "name" in r), api_docs.toolbench_tool),
    Schema("sharegpt", _has("conversations"), trajectories.sharegpt),
    Schema("openai_messages", _has("messages"), trajectories.openai_messages),
    Schema("xlam", _has("query", "tools", "answers"), trajectories.xlam),
    Schema("api_bank_lv3", _is_api_bank_sample, trajectories.api_bank_lv3),
    Schema("api_bank_dialogue", _has("turns"), trajectories.api_bank_dialogue),
    Schema(
        "api_bank_api",
        lambda r: "apiCode" in r or _has("name", "input_parameters")(r),
        lambda r, c: [api_docs.api_bank_api(r, c)],
    ),
    Schema(
        "function_spec",
        lambda r: ("name" in r and "parameters" in r) or r.get("type") == "function",
        lambda r, c: [api_docs.function_spec(r, c)],
    ),
    Schema("library_doc", _has("text", "path"), api_docs.library_doc),
]
_API_BANK_TURN_ROLES = {"User", "AI", "API"}


def detect(record: Mapping[str, Any]) -> Schema | None:
    return next((s for s in SCHEMAS if s.matches(record)), None)


def _decode(data: bytes, name: str) -> str:
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise SeedFormatError(f"{name}: gzip stream is corrupt ({e})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise SeedFormatError(f"{name} line {line}: not UTF-8 (byte {e.start}: {e.reason})") from None


def _jsonl(text: str, name: str) -> Iterator[tuple[str, Any]]:
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield f"line {i}", json.loads(line)
        except json.JSONDecodeError as e:
            raise SeedFormatError(f"{name} line {i}: invalid JSON ({e.msg} at column {e.colno})") from None


def _looks_like_jsonl(text: str) -> bool:
    first = text.lstrip().split("\n", 1)[0]
    try:
        return isinstance(json.loads(first), dict)
    except json.JSONDecodeError:
        return False


def parse_records(data: bytes, name: str) -> tuple[list[tuple[str, Any]], list[str]]:
    """A seed file's records with their position (``line N`` / ``record N``) and any repairs made."""
    text = _decode(data, name)
    base = name.lower().removesuffix(".gz")
    if base.endswith((".jsonl", ".ndjson")):
        return list(_jsonl(text, name)), []
    repairs: list[str] = []
    try:
        value: Any = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg.startswith("Extra data") and _looks_like_jsonl(text):
            return list(_jsonl(text, name)), []
        value, repairs = loads_lenient(text, name)
    if isinstance(value, Mapping):
        if detect(value) is not None or not all(isinstance(v, Mapping) for v in value.values()):
            return [("", value)], repairs
        return [(f"record {k!r}", v) for k, v in value.items()], repairs
    if not isinstance(value, list):
        raise SeedFormatError(f"{name}: top-level JSON is a {type(value).__name__}, expected a list or object")
    records: list[tuple[str, Any]] = []
    for i, item in enumerate(value):
        if isinstance(item, list):
            repairs.append(f"flattened a list nested in the top-level list at record {i}")
            records.extend((f"record {i}.{j}", x) for j, x in enumerate(_flatten(item)))
        else:
            records.append((f"record {i}", item))
    return records, repairs


def _flatten(items: list[Any]) -> Iterator[Any]:
    for x in items:
        if isinstance(x, list):
            yield from _flatten(x)
        else:
            yield x


def group_api_bank_turns(records: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Upstream API-Bank dialogues are JSONL files of turns: one file is one dialogue record."""
    if records and all(isinstance(r, Mapping) and r.get("role") in _API_BANK_TURN_ROLES for _, r in records):
        return [("", {"turns": [r for _, r in records]})]
    return records
