"""Loaders for API documentation seeds: one function per schema, each yielding doc-page seeds.

Every loader takes one parsed record and a ``Ctx`` (where it came from) and returns seed rows of
kind ``api_doc`` whose text is rendered as the documentation page would read (see render.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from raypipe.seeds.records import SeedFormatError, make_seed
from raypipe.seeds.render import (
    as_text,
    doc_page,
    is_empty,
    json_schema_params,
    markdown_to_text,
    params_from_mapping,
    rst_to_text,
)

_CALLEE = re.compile(r"^\s*(?:[\w.]+\s*=\s*)?([A-Za-z_][\w.]*)\s*\(")
_HTTP_CALL = re.compile(r"^\s*(GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS)\s+(\S+)", re.I)


@dataclass(frozen=True)
class Ctx:
    """Where a record came from: seed source name, file, position, and the file's license."""

    source: str
    file: str
    where: str
    license: str | None = None

    @property
    def origin(self) -> str:
        return f"{self.file}#{self.where}" if self.where else self.file

    def error(self, message: str) -> SeedFormatError:
        return SeedFormatError(f"{self.file} {self.where}: {message}".replace("  ", " "))

    def seed(self, kind: str, text: str, schema: str, apis: list[str], license: str | None = None) -> dict:
        return make_seed(
            kind=kind,  # type: ignore[arg-type]
            text=text,
            source=self.source,
            schema=schema,
            origin=self.origin,
            apis=apis,
            license=license or self.license,
        )


def callee(call: str) -> str:
    """The API a call names: ``torch.hub.load`` for ``torch.hub.load(...)``, ``GET /v1/x`` for REST."""
    m = _HTTP_CALL.match(call)
    if m:
        return f"{m.group(1).upper()} {m.group(2)}"
    m = _CALLEE.match(call)
    return m.group(1) if m else ""


def require(rec: Mapping[str, Any], ctx: Ctx, *keys: str) -> None:
    missing = [k for k in keys if is_empty(rec.get(k))]
    if missing:
        raise ctx.error(f"record lacks required field(s) {', '.join(missing)}")


def gorilla_api(rec: Mapping[str, Any], ctx: Ctx) -> list[dict]:
    """Gorilla API docs (HuggingFace / TorchHub / TensorFlow Hub model cards)."""
    require(rec, ctx, "api_name", "api_call")
    subtitle = " · ".join(as_text(rec[k]) for k in ("framework", "domain") if not is_empty(rec.get(k)))
    perf = rec.get("performance")
    sections = [
        ("Functionality", as_text(rec.get("functionality", ""))),
        (
            "Requirements",
            ""
            if is_empty(rec.get("python_environment_requirements"))
            else as_text(rec["python_environment_requirements"]),
        ),
        ("Performance", "" if is_empty(perf) else as_text(perf)),
    ]
    text = doc_page(
        as_text(rec["api_name"]),
        subtitle=subtitle,
        signature=as_text(rec["api_call"]),
        description=as_text(rec.get("description", "")),
        params=params_from_mapping(rec.get("api_arguments")),
        example=rec.get("example_code"),
        sections=sections,
    )
    return [ctx.seed("api_doc", text, "gorilla_api", [as_text(rec["api_name"]), callee(as_text(rec["api_call"]))])]


def apizoo(rec: Mapping[str, Any], ctx: Ctx) -> list[dict]:
    """Gorilla apizoo community REST/SDK docs (Zoom, ServiceNow, Google Workspace, ...)."""
    require(rec, ctx, "api_name", "api_call")
    meta = rec.get("meta_data") or rec.get("metadata") or {}
    description = "\n\n".join(
        as_text(v)
        for v in (rec.get("functionality"), meta.get("description") if isinstance(meta, Mapping) else None)
        if not is_empty(v)
    )
    version = "" if is_empty(rec.get("api_version")) else f"API version {as_text(rec['api_version'])}"
    reqs = rec.get("env_requirements")
    text = doc_page(
        as_text(rec["api_name"]),
        subtitle=version,
        signature=as_text(rec["api_call"]),
        description=description,
        params=params_from_mapping(rec.get("api_arguments")),
        example=rec.get("example_code"),
        sections=[("Requirements", "" if is_empty(reqs) else as_text(reqs))],
    )
    return [ctx.seed("api_doc", text, "apizoo", [as_text(rec["api_name"]), callee(as_text(rec["api_call"]))])]


def api_bank_api(desc: Mapping[str, Any], ctx: Ctx) -> dict:
    """One API-Bank API description (``apiCode``/``name``, parameters, response) as a doc page."""
    name = as_text(desc.get("apiCode") or desc.get("name") or "")
    if not name:
        raise ctx.error(f"API-Bank API description without a name: {as_text(desc)[:120]}")
    params = desc.get("parameters", desc.get("input_parameters"))
    response = desc.get("response", desc.get("output_parameters"))
    returns = "\n".join(f"{n} ({t}): {d}".replace(" ()", "") for n, t, d in params_from_mapping(response))
    text = doc_page(
        name,
        description=as_text(desc.get("description", "")),
        params=params_from_mapping(params),
        returns=returns,
    )
    return ctx.seed("api_doc", text, "api_bank_api", [name])


def function_spec(spec: Mapping[str, Any], ctx: Ctx, schema: str = "function_spec") -> dict:
    """An OpenAI-style function/tool schema (``name``, ``description``, JSON-Schema ``parameters``)."""
    fn = spec.get("function") if isinstance(spec.get("function"), Mapping) else spec
    name = as_text(fn.get("name", ""))
    if not name:
        raise ctx.error(f"tool definition without a name: {as_text(spec)[:120]}")
    params = json_schema_params(fn.get("parameters", {}))
    text = doc_page(
        name,
        signature=f"{name}({', '.join(p for p, _, _ in params)})",
        description=as_text(fn.get("description", "")),
        params=params,
    )
    return ctx.seed("api_doc", text, schema, [name])


def toolbench_endpoint(api: Mapping[str, Any], ctx: Ctx, tool_name: str = "", tool_description: str = "") -> dict:
    """One RapidAPI endpoint from ToolBench (``api_list`` entry) as its documentation page."""
    tool = as_text(api.get("tool_name") or tool_name)
    name = as_text(api.get("api_name") or api.get("name") or "")
    if not name:
        raise ctx.error(f"ToolBench api_list entry without api_name: {as_text(api)[:120]}")
    params = []
    for kind in ("required_parameters", "optional_parameters"):
        for p in api.get(kind) or []:
            if isinstance(p, Mapping):
                typ = as_text(p.get("type", "")).lower() + (", required" if kind.startswith("required") else "")
                extra = "" if is_empty(p.get("default")) else f" (default {as_text(p['default'])})"
                params.append((as_text(p.get("name", "?")), typ, as_text(p.get("description", "")) + extra))
    subtitle = " · ".join(x for x in (as_text(api.get("category_name", "")), tool) if x)
    method = as_text(api.get("method", ""))
    desc = as_text(api.get("api_description") or api.get("description") or "")
    text = doc_page(
        f"{tool}: {name}" if tool else name,
        subtitle=subtitle,
        signature=f"{method} {as_text(api.get('url', ''))}".strip() if method else "",
        description="\n\n".join(x for x in (desc, tool_description) if x.strip()),
        params=params,
    )
    return ctx.seed("api_doc", text, "toolbench_tool", [f"{tool}.{name}" if tool else name])


def toolbench_tool(rec: Mapping[str, Any], ctx: Ctx) -> list[dict]:
    """A ToolBench tool file (``tool_name``, ``tool_description``, ``api_list``): one page per endpoint."""
    apis = rec.get("api_list")
    if not isinstance(apis, list):
        raise ctx.error("ToolBench tool has no api_list")
    tool = as_text(rec.get("tool_name") or rec.get("name") or "")
    desc = as_text(rec.get("tool_description") or rec.get("description") or "")
    return [toolbench_endpoint(a, ctx, tool, desc) for a in apis if isinstance(a, Mapping)]


_DIRECTIVE_API = re.compile(
    r"^\s*\.\.\s+(?:py:)?(?:auto)?(?:function|class|method|module|attribute|exception|decorator|data)::\s*([\w.]+)",
    re.M,
)
_MD_API = re.compile(r"```\{(?:py:)?(?:auto)?(?:function|class|method|module)\}\s*([\w.]+)")


def library_doc(rec: Mapping[str, Any], ctx: Ctx) -> list[dict]:
    """A library reference page shipped as reStructuredText or Markdown in a package's docs/."""
    require(rec, ctx, "text", "path")
    source_text = str(rec["text"])
    suffix = PurePosixPath(str(rec["path"])).suffix.lower()
    body = markdown_to_text(source_text) if suffix in (".md", ".markdown") else rst_to_text(source_text)
    if not body.strip():
        return []
    package = as_text(rec.get("package", ""))
    apis = _DIRECTIVE_API.findall(source_text) + _MD_API.findall(source_text)
    header = f"{package} {as_text(rec.get('version', ''))} documentation".strip() if package else ""
    text = f"{header}\n\n{body}" if header else body
    return [ctx.seed("api_doc", text, "library_doc", apis or ([package] if package else []), rec.get("license"))]


def normalized_seed(rec: Mapping[str, Any], ctx: Ctx) -> list[dict]:
    """A record already in seed form (``raypipe crawl`` writes these): kept, its id and source too."""
    kind = rec.get("kind")
    if kind not in ("api_doc", "trajectory"):
        raise ctx.error(f"seed record kind must be api_doc or trajectory, got {kind!r}")
    require(rec, ctx, "text", "source")
    apis = rec.get("apis") or []
    if not isinstance(apis, list):
        raise ctx.error("seed record 'apis' must be a list")
    seed = make_seed(
        kind=kind,
        text=str(rec["text"]),
        source=str(rec["source"]),
        schema="seed_record",
        origin=ctx.origin,
        apis=[str(a) for a in apis],
        license=rec.get("license") or ctx.license,
    )
    return [{**seed, "id": str(rec.get("id") or seed["id"])}]
