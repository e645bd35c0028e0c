"""Turn structured seeds into the text a reader (and the embedding model) would meet on the web.

Why prose: the retrieval stage compares seeds with *extracted web pages*. A documentation page,
once its HTML is reduced to text, is a title, a signature or endpoint, a description, a parameter
list and an example, one block per line; it is never a JSON object. Rendering API docs that way
puts seeds and the pages we hunt in the same region of embedding space (measured in
bench/retrieval_quality.py). Trajectories keep their call structure instead: the JSON of each call,
each observation and the final answer, in order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

BULLET = "• "  # what resiliparse's plain-text extraction puts before list items
_EMPTY = {"", "n/a", "na", "none", "null", "[]", "{}", "-"}


def is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip().lower() in _EMPTY
    if isinstance(value, (list, tuple, dict)):
        return all(is_empty(v) for v in (value.values() if isinstance(value, dict) else value))
    return False


def as_text(value: Any) -> str:
    """A value as a reader would see it: strings verbatim, structures as compact JSON."""
    if isinstance(value, str):
        return value.strip()
    return json.dumps(value, ensure_ascii=False, default=str)


def strip_html(text: str) -> str:
    """Some REST docs carry HTML fragments in descriptions; a page shows their text."""
    if "<" not in text:
        return text
    text = re.sub(r"(?i)<\s*(br|/p|/li|/ul|/ol|/h\d)\s*/?>", "\n", text)
    return re.sub(r"<[^>]+>", "", text)


def param_lines(params: Iterable[tuple[str, str, str]]) -> list[str]:
    """``(name, type, description)`` triples as the bullet list of a doc page."""
    out = []
    for name, typ, desc in params:
        head = f"{BULLET}{name}" + (f" ({typ})" if typ else "")
        desc = strip_html(desc).strip()
        out.append(f"{head}: {desc}" if desc else head)
    return out


def params_from_mapping(args: Any) -> list[tuple[str, str, str]]:
    """Parameters written in the many shapes community docs use: dict of str, dict of dicts, list."""
    if is_empty(args):
        return []
    if isinstance(args, str):
        return [(a.strip(), "", "") for a in args.split(",") if a.strip()]
    if isinstance(args, list):
        return [(as_text(a), "", "") for a in args if not is_empty(a)]
    if not isinstance(args, Mapping):
        return [(as_text(args), "", "")]
    out = []
    for name, spec in args.items():
        if isinstance(spec, Mapping):
            typ = as_text(spec.get("type") or spec.get("data_type") or "")
            desc = spec.get("description")
            if desc is None:
                desc = "; ".join(f"{k}: {as_text(v)}" for k, v in spec.items() if k not in ("type", "data_type"))
            out.append((str(name), typ, as_text(desc)))
        else:
            out.append((str(name), "", "" if is_empty(spec) else as_text(spec)))
    return out


def json_schema_params(parameters: Any) -> list[tuple[str, str, str]]:
    """OpenAI/JSON-Schema ``parameters`` as doc-page rows, required ones marked."""
    if not isinstance(parameters, Mapping):
        return params_from_mapping(parameters)
    props = parameters.get("properties")
    if not isinstance(props, Mapping):
        return params_from_mapping({k: v for k, v in parameters.items() if k not in ("type", "required")})
    required = set(parameters.get("required") or [])
    rows = []
    for name, spec in props.items():
        spec = spec if isinstance(spec, Mapping) else {"description": as_text(spec)}
        typ = as_text(spec.get("type", ""))
        if name in required:
            typ = f"{typ}, required" if typ else "required"
        desc = as_text(spec.get("description", ""))
        extras = [f"one of {as_text(spec['enum'])}" for _ in [0] if "enum" in spec]
        extras += [f"default {as_text(spec[k])}" for k in ("default", "example_value") if not is_empty(spec.get(k))]
        rows.append((str(name), typ, "; ".join(p for p in [desc, *extras] if p)))
    return rows


def doc_page(
    title: str,
    *,
    subtitle: str = "",
    signature: str = "",
    description: str = "",
    params: list[tuple[str, str, str]] | None = None,
    returns: str = "",
    example: Any = None,
    sections: list[tuple[str, str]] | None = None,
) -> str:
    """An API reference page as extracted text: title, signature, prose, parameters, example."""
    blocks = [title.strip()]
    if subtitle.strip():
        blocks.append(subtitle.strip())
    if signature.strip():
        blocks.append(signature.strip())
    if description.strip():
        blocks.append(strip_html(description).strip())
    if params:
        blocks.append("Parameters\n" + "\n".join(param_lines(params)))
    if returns.strip():
        blocks.append("Returns\n" + strip_html(returns).strip())
    for heading, body in sections or []:
        if body.strip():
            blocks.append(f"{heading}\n{body.strip()}")
    if not is_empty(example):
        code = "\n".join(example) if isinstance(example, list) else as_text(example)
        blocks.append("Example\n" + code.strip())
    return "\n\n".join(blocks)


def tool_reference(tools: list[Mapping[str, Any]]) -> str:
    """The tools offered to a model, each as a short doc entry (name, description, parameters)."""
    entries = []
    for tool in tools:
        fn = tool.get("function", tool) if isinstance(tool.get("function"), Mapping) else tool
        name = str(fn.get("name", "?"))
        lines = [f"{name}: {as_text(fn.get('description', ''))}".rstrip(": ")]
        lines += param_lines(json_schema_params(fn.get("parameters", {})))
        entries.append("\n".join(lines))
    return "Available tools\n\n" + "\n\n".join(entries) if entries else ""


def call_json(name: str, arguments: Any) -> str:
    """A function call as the canonical ``{"name", "arguments"}`` JSON, arguments parsed if they are a string."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            pass
    return json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)


def transcript(header: str, turns: list[tuple[str, str]]) -> str:
    """A trajectory: optional tool reference, then ``Role: content`` turns separated by blank lines."""
    body = "\n\n".join(f"{role}: {content.strip()}" for role, content in turns if content and content.strip())
    return f"{header.strip()}\n\n{body}" if header.strip() else body


_RST_ROLE = re.compile(r":[\w:.+-]+:`(?:[^`<]*<)?~?!?([^`>]+)>?`")
_RST_LINK = re.compile(r"`([^`<]+?)\s*<[^`>]+>`_{1,2}")
_RST_REF = re.compile(r"`([^`]+)`_{1,2}")
_RST_LITERAL = re.compile(r"``([^`]+)``")
_RST_STRONG = re.compile(r"\*\*([^*]+)\*\*")
_RST_BULLET = re.compile(r"^(\s*)[*+-] ")
_RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+_.:])\1{2,}\s*$")
_RST_DIRECTIVE = re.compile(r"^(\s*)\.\.\s+([\w:-]+)::\s*(.*)$")
_RST_OPTION = re.compile(r"^\s+:[\w-]+:.*$")
_RST_COMMENT = re.compile(r"^\s*\.\.(\s|$)(?!.*::)")
_SIGNATURE_DIRECTIVES = {"function", "method", "class", "attribute", "data", "exception", "decorator", "module"}


def rst_to_text(text: str) -> str:
    """reStructuredText/Sphinx source as its built HTML page reads once reduced to text.

    Markup is dropped and the reader-visible content kept: titles lose their underlines, roles and
    links keep their words, ``.. autofunction:: x`` and ``.. function:: f(a)`` keep the API name or
    signature, option lines (``:members:``) and comments disappear, code stays as code.
    """
    out: list[str] = []
    in_comment = False
    for line in text.splitlines():
        if _RST_UNDERLINE.match(line):
            continue
        m = _RST_DIRECTIVE.match(line)
        if m:
            in_comment = False
            name, arg = m.group(2).split(":")[-1], m.group(3).strip()
            if name.startswith("auto") or name in _SIGNATURE_DIRECTIVES:
                out.append(m.group(1) + arg)
            elif arg and name not in {"code-block", "code", "sourcecode", "highlight", "toctree", "image", "figure"}:
                out.append(m.group(1) + arg)
            continue
        if _RST_COMMENT.match(line):
            in_comment = True
            continue
        if in_comment and (line.startswith((" ", "\t")) or not line.strip()):
            continue
        in_comment = False
        if _RST_OPTION.match(line):
            continue
        line = _RST_ROLE.sub(r"\1", line)
        line = _RST_LINK.sub(r"\1", line)
        line = _RST_LITERAL.sub(r"\1", line)
        line = _RST_REF.sub(r"\1", line)
        line = _RST_BULLET.sub(r"\1" + BULLET, _RST_STRONG.sub(r"\1", line))
        out.append(line.replace("::", ":") if line.rstrip().endswith("::") else line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


_MYST_ROLE = re.compile(r"\{[\w:.-]+\}`")
_MYST_LABEL = re.compile(r"(?m)^\([\w.-]+\)=\s*$")


def markdown_to_text(text: str) -> str:
    """Markdown rendered to HTML (markdown-it) and reduced to text as a page extractor would."""
    from markdown_it import MarkdownIt
    from resiliparse.extract.html2text import extract_plain_text

    text = _MYST_LABEL.sub("", _MYST_ROLE.sub("`", text))
    html = MarkdownIt("commonmark").enable("table").render(text)
    return extract_plain_text(f"<html><body>{html}</body></html>", main_content=False).strip()
