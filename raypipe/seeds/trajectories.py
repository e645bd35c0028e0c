"""Loaders for function-calling trajectories: one function per schema, one transcript per record.

The transcript keeps what makes a trajectory useful as a seed: which tools were offered, each call
as ``{"name", "arguments"}`` JSON, each observation, and the final answer, in order. Tool schemas
met on the way are also returned as ``api_doc`` seeds (exact dedup later folds repeats).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping
from typing import Any

from raypipe.seeds.api_docs import Ctx, api_bank_api, callee, function_spec, gorilla_api, toolbench_endpoint
from raypipe.seeds.render import as_text, call_json, tool_reference, transcript

USER, ASSISTANT, THOUGHT, CALL, OBSERVATION, FINAL = (
    "User",
    "Assistant",
    "Thought",
    "Function call",
    "Observation",
    "Final answer",
)
_ROLES = {
    "human": USER,
    "user": USER,
    "gpt": ASSISTANT,
    "assistant": ASSISTANT,
    "system": "System",
    "observation": OBSERVATION,
    "tool": OBSERVATION,
    "function": OBSERVATION,
    "ipython": OBSERVATION,
    "function_call": CALL,
    "tool_call": CALL,
}


def parse_json_field(value: Any, ctx: Ctx, field: str) -> Any:
    """Fields such as ``tools`` arrive as JSON text in some datasets and as structures in others."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value) if value.strip() else []
    except json.JSONDecodeError as e:
        raise ctx.error(f"field {field!r} is not valid JSON ({e.msg} at char {e.pos})") from None


def _tools(value: Any, ctx: Ctx) -> list[Mapping[str, Any]]:
    tools = parse_json_field(value, ctx, "tools") or []
    if isinstance(tools, Mapping):
        tools = [tools]
    if not isinstance(tools, list):
        raise ctx.error(f"field 'tools' must be a list of tool definitions, got {type(tools).__name__}")
    return [t for t in tools if isinstance(t, Mapping)]


def _call_name(text: str) -> str:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return callee(text)
    return str(obj.get("name", "")) if isinstance(obj, Mapping) else ""


def _mark_final(turns: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The last assistant message of a trajectory is its final answer."""
    for i in range(len(turns) - 1, -1, -1):
        if turns[i][0] == ASSISTANT:
            turns[i] = (FINAL, turns[i][1])
            break
    return turns


def _finish(ctx: Ctx, schema: str, tools: list[Mapping[str, Any]], turns: list[tuple[str, str]]) -> list[dict]:
    if not any(content.strip() for _, content in turns):
        raise ctx.error("trajectory has no turns with content")
    docs = [function_spec(t, ctx) for t in tools]
    called = [_call_name(c) for role, c in turns if role == CALL]
    names = [d["apis"][0] for d in docs] + called
    return [ctx.seed("trajectory", transcript(tool_reference(tools), _mark_final(turns)), schema, names), *docs]


def sharegpt(rec: Mapping[str, Any], ctx: Ctx) -> list[dict]:
    """ShareGPT ``conversations`` (glaive function calling): human/gpt/function_call/observation turns."""
    conv = rec.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise ctx.error("'conversations' must be a non-empty list")
    turns = []
    for i, turn in enumerate(conv):
        if not isinstance(turn, Mapping) or "value" not in turn:
            raise ctx.error(f"conversation turn {i} is not a {{from, value}} object")
        role = _ROLES.get(str(turn.get("from", "")).lower())
        if role is None:
            raise ctx.error(f"conversation turn {i} has unknown speaker {turn.get('from')!r}")
        value = as_text(turn["value"])
        if role == CALL:
            obj = parse_json_field(value, ctx, f"conversations[{i}].value")
            value = call_json(obj.get("name", ""), obj.get("arguments", {})) if isinstance(obj, Mapping) else value
        turns.append((role, value))
    if rec.get("system"):
        turns.insert(0, ("System", as_text(rec["system"])))
    return _finish(ctx, "sharegpt", _tools(rec.get("tools"), ctx), turns)


def _message_turns(msg: Mapping[str, Any], ctx: Ctx, i: int) -> list[tuple[str, str]]:
    role = _ROLES.get(str(msg.get("role", "")).lower())
    if role is None:
        raise ctx.error(f"message {i} has unknown role {msg.get('role')!r}")
    out: list[tuple[str, str]] = []
    content = msg.get("content")
    parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
    for part in parts:
        if isinstance(part, str):
            part = {"type": "text", "text": part}
        if not isinstance(part, Mapping):
            raise ctx.error(f"message {i} has a content part that is not an object")
        kind = part.get("type", "text")
        value = part.get("text", part.get("value"))
        if value is None:
            continue
        if kind in ("reasoning", "thinking"):
            out.append((THOUGHT, as_text(value)))
        elif kind in ("tool_call", "function_call"):
            obj = parse_json_field(value, ctx, f"messages[{i}].content")
            out.append(
                (
                    CALL,
                    call_json(obj.get("name", ""), obj.get("arguments", {}))
                    if isinstance(obj, Mapping)
                    else as_text(value),
                )
            )
        else:
            out.append((role, as_text(value)))
    calls = list(msg.get("tool_calls") or [])
    if isinstance(msg.get("function_call"), Mapping):
        calls.append({"function": msg["function_call"]})
    for call in calls:
        fn = call.get("function", call) if isinstance(call, Mapping) else {}
        out.append((CALL, call_json(str(fn.get("name", "")), fn.get("arguments", {}))))
    return out


def openai_messages(rec: Mapping[str, Any], ctx: Ctx) -> list[dict]:
    """OpenAI chat ``messages`` (+ ``tools``/``functions``): tool_calls, tool results, typed content parts."""
    messages = rec.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ctx.error("'messages' must be a non-empty list")
    turns = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, Mapping):
            raise ctx.error(f"message {i} is not an object")
        turns.extend(_message_turns(msg, ctx, i))
    tools = _tools(rec.get("tools") or rec.get("functions"), ctx)
    return _finish(ctx, "openai_messages", tools, turns)


def xlam(rec: Mapping[str, Any], ctx: Ctx) -> list[dict]:
    """xLAM / APIGen function-calling records: ``query``, ``tools``, ``answers`` (list of calls)."""
    answers = parse_json_field(rec.get("answers"), ctx, "answers")
    if not isinstance(answers, list):
        raise ctx.error("'answers' must be a list of {name, arguments} calls")
    turns = [(USER, as_text(rec.get("query", "")))]
    for j, call in enumerate(answers):
        if not isinstance(call, Mapping) or "name" not in call:
            raise ctx.error(f"answers[{j}] is not a {{name, arguments}} call")
        turns.append((CALL, call_json(str(call["name"]), call.get("arguments", {}))))
    return _finish(ctx, "xlam", _tools(rec.get("tools"), ctx), turns)


def toolbench_answer(rec: Mapping[str, Any], ctx: Ctx) -> list[dict] | str:
    """A ToolBench DFSDT answer file: the final solution path of ``answer_generation.train_messages``.

    Returns a skip reason (a string) when ToolBench itself marked the search invalid and kept no
    solution path; the caller counts it.
    """
    gen = rec.get("answer_generation")
    if not isinstance(gen, Mapping):
        raise ctx.error("'answer_generation' must be an object")
    paths = gen.get("train_messages") or []
    if not paths:
        return "toolbench answer without a solution path (valid_data=false)"
    turns: list[tuple[str, str]] = []
    for i, msg in enumerate(paths[-1]):
        if msg.get("role") == "system":
            continue
        if msg.get("role") == "assistant" and msg.get("content"):
            turns.append((THOUGHT, as_text(msg["content"])))
        fc = msg.get("function_call")
        if isinstance(fc, Mapping) and fc.get("name") == "Finish":
            args = parse_json_field(fc.get("arguments", "{}"), ctx, f"train_messages[{i}].function_call")
            answer = args.get("final_answer") or args.get("return_type", "") if isinstance(args, Mapping) else args
            turns.append((FINAL, as_text(answer)))
        elif isinstance(fc, Mapping):
            turns.append((CALL, call_json(str(fc.get("name", "")), fc.get("arguments", {}))))
        elif msg.get("role") != "assistant":
            turns.extend(_message_turns(msg, ctx, i))
    tools = [f for f in gen.get("function") or [] if isinstance(f, Mapping) and f.get("name") != "Finish"]
    return _finish(ctx, "toolbench_answer", tools, turns)


def toolbench_query(rec: Mapping[str, Any], ctx: Ctx) -> list[dict]:
    """A ToolBench instruction: a user query with the RapidAPI endpoints it needs (their docs too)."""
    apis = rec.get("api_list")
    if not isinstance(apis, list):
        raise ctx.error("'api_list' must be a list")
    docs = [toolbench_endpoint(a, ctx) for a in apis if isinstance(a, Mapping)]
    relevant = [" / ".join(map(str, r)) for r in rec.get("relevant APIs") or []]
    header = "Available tools\n\n" + "\n\n".join(d["text"] for d in docs)
    turns = [(USER, as_text(rec.get("query", ""))), ("Relevant APIs", ", ".join(relevant))]
    seed = ctx.seed("trajectory", transcript(header, turns), "toolbench_query", [d["apis"][0] for d in docs])
    return [seed, *docs]


_API_REQUEST = re.compile(r"^API-Request:\s*\[(.*)\]\s*(?:->\s*(.*))?$", re.S)


def _literal(text: str) -> Any:
    """API-Bank writes results as Python literals (single quotes); read them without eval."""
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError, json.JSONDecodeError, MemoryError, RecursionError):
            continue
    return text


def api_bank_lv3(rec: Mapping[str, Any], ctx: Ctx) -> list[dict]:
    """API-Bank level-3 training samples (``instruction``/``input``/``output``) as a dialogue.

    ``input`` holds the API descriptions (JSON lines) and the dialogue so far (``User:`` lines and
    ``API-Request: [Call(...)]->result`` lines); ``output`` is the next call or the AI's answer.
    The shared instruction template is boilerplate and is left out.
    """
    text = str(rec.get("input", ""))
    descs: list[Mapping[str, Any]] = []
    turns: list[tuple[str, str]] = []
    for line in [*text.splitlines(), str(rec.get("output", ""))]:
        line = line.strip()
        if not line or line.startswith(("Generate API Request", "Generate AI Response")):
            continue
        if line.startswith("{") and not turns:
            desc = _literal(line)
            if not isinstance(desc, Mapping):
                raise ctx.error(f"API description is not a JSON object: {line[:80]!r}")
            descs.append(desc)
        elif m := _API_REQUEST.match(line):
            turns.append((CALL, m.group(1)))
            if m.group(2):
                result = _literal(m.group(2))
                if isinstance(result, Mapping) and "name" in result and "description" in result:
                    descs.append(result)
                turns.append((OBSERVATION, as_text(result)))
        elif line.startswith("User:"):
            turns.append((USER, line[5:].strip()))
        elif line.startswith("AI:"):
            turns.append((ASSISTANT, line[3:].strip()))
        elif turns:
            role, prev = turns[-1]
            turns[-1] = (role, f"{prev}\n{line}")
        else:
            raise ctx.error(f"unexpected line before the dialogue starts: {line[:80]!r}")
    if not turns:
        raise ctx.error("API-Bank sample has no dialogue turns")
    docs = [api_bank_api(d, ctx) for d in descs]
    header = "Available tools\n\n" + "\n\n".join(d["text"] for d in docs) if docs else ""
    names = [d["apis"][0] for d in docs] + [callee(c) for r, c in turns if r == CALL]
    seed = ctx.seed("trajectory", transcript(header, _mark_final(turns)), "api_bank_lv3", names)
    return [seed, *docs]


def api_bank_dialogue(rec: Mapping[str, Any], ctx: Ctx) -> list[dict]:
    """An API-Bank dialogue: ``turns`` of User / AI / API (``api_name``, ``param_dict``, ``result``)."""
    raw = rec.get("turns")
    if not isinstance(raw, list) or not raw:
        raise ctx.error("'turns' must be a non-empty list")
    turns: list[tuple[str, str]] = []
    for i, turn in enumerate(raw):
        role = str(turn.get("role", "")) if isinstance(turn, Mapping) else ""
        if role == "API":
            turns.append((CALL, call_json(str(turn.get("api_name", "")), turn.get("param_dict", {}))))
            result = turn.get("result") or {}
            out = result.get("output") if result.get("exception") is None else {"exception": result["exception"]}
            turns.append((OBSERVATION, as_text(out)))
        elif role in ("User", "AI"):
            turns.append((USER if role == "User" else ASSISTANT, as_text(turn.get("text", ""))))
        else:
            raise ctx.error(f"turn {i} has unknown role {role!r} (expected User, AI or API)")
    return _finish(ctx, "api_bank_dialogue", [], turns)


_APIBENCH_INSTRUCTION = re.compile(r"'Instruction':\s*(.*?),\s*'(?:Input|Output)':", re.S)
_APIBENCH_KEY = re.compile(r"[{,]\s*'(\w+)':\s*")


def _apibench_fields(code: str) -> dict[str, str]:
    """Split ``{'k': v, ...}`` text at its ``'key':`` marks; values keep their inner quotes as written."""
    marks = list(_APIBENCH_KEY.finditer(code))
    fields = {}
    for m, nxt in zip(marks, [*marks[1:], None], strict=False):
        value = code[m.end() : nxt.start() if nxt else len(code)].strip().rstrip("}").strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        fields.setdefault(m.group(1), value.strip())
    return fields


def apibench_train(rec: Mapping[str, Any], ctx: Ctx) -> list[dict]:
    """Gorilla APIBench training pairs: an instruction answered with an API call, code and explanation.

    The ``code`` field is a Python-dict-like string that is not valid Python either (quotes inside
    are not escaped), so its parts are cut out at their ``'key':`` marks. The embedded
    ``api_data`` is the API's own doc (a Gorilla doc seed).
    """
    code = str(rec.get("code", ""))
    m = _APIBENCH_INSTRUCTION.search(code)
    if not m:
        raise ctx.error("APIBench 'code' field has no 'Instruction': ... 'Output': structure")

    fields = _apibench_fields(code[m.end() :])
    call = as_text(rec.get("api_call", ""))
    answer = "\n\n".join(fields[k] for k in ("explanation", "code") if fields.get(k)) or fields.get("Output", "")
    turns = [(USER, m.group(1).strip()), (CALL, call), (FINAL, answer)]
    api_data = rec.get("api_data")
    docs = gorilla_api(api_data, ctx) if isinstance(api_data, Mapping) else []
    names = [callee(call)] + [d["apis"][0] for d in docs]
    return [ctx.seed("trajectory", transcript("", turns), "apibench_train", names), *docs]
