"""Child process of the API harvester: import modules and print one JSON line per public API.

It runs in its own interpreter (started by harvest.py) because importing arbitrary modules can
print, spawn threads, hang or crash; the parent survives all of that and restarts a child. This
file must not import raypipe: it runs with nothing but the standard library on its path.

stdin: one JSON object {"modules": [...], "max_submodules": int, "max_apis_per_module": int}.
stdout (a private copy of fd 1; the real fd 1 and 2 point to /dev/null so imported code cannot
corrupt the stream): lines {"event": "start"|"api"|"error"|"done", ...}.
"""

import importlib
import inspect
import json
import os
import pkgutil
import re
import sys
import warnings

_SKIP_PARTS = {"tests", "test", "testing_utils", "conftest", "__main__", "setup"}
# Default values print with their memory address (``<... object at 0x7f81...>``), which changes on
# every run: a seed whose text changes between runs changes the classifier and the selection.
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


class _Seen(set):
    """APIs already described (a class re-exported in ten modules is one API), counted per package."""

    def __init__(self, cap):
        super().__init__()
        self.cap = cap
        self.counts = {}


def _emit(out, **fields):
    out.write(json.dumps(fields, ensure_ascii=False) + "\n")
    out.flush()


def _signature(obj):
    try:
        return _ADDRESS.sub("", str(inspect.signature(obj)))
    except (TypeError, ValueError, RecursionError):
        text = getattr(obj, "__text_signature__", None)
        return text.replace("$", "") if isinstance(text, str) else "(...)"


def _public_names(mod):
    names = getattr(mod, "__all__", None)
    if isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names):
        return [n for n in names if not n.startswith("_")]
    return [n for n in dir(mod) if not n.startswith("_")]


def _is_api(obj):
    return inspect.isclass(obj) or inspect.isroutine(obj)


def _belongs(obj, top):
    owner = (getattr(obj, "__module__", None) or "").lstrip("_")
    return owner == top or owner.startswith(top + ".")


def _describe(out, seen, top, module, qualname, obj, kind):
    key = (getattr(obj, "__module__", ""), getattr(obj, "__qualname__", qualname), kind)
    if key in seen:
        return
    seen.add(key)
    seen.counts[top] = seen.counts.get(top, 0) + 1
    doc = inspect.getdoc(obj) if kind != "method" or obj.__doc__ else None
    _emit(out, event="api", top=top, module=module, name=qualname, kind=kind, signature=_signature(obj), doc=doc or "")


def _introspect(out, seen, top, mod):
    for name in _public_names(mod):
        if seen.counts.get(top, 0) >= seen.cap:
            return
        try:
            obj = getattr(mod, name)
        except Exception:  # noqa: BLE001 - lazy attributes may raise anything
            continue
        if not _is_api(obj) or not _belongs(obj, top):
            continue
        qual = f"{mod.__name__}.{name}"
        if inspect.isclass(obj):
            _describe(out, seen, top, mod.__name__, qual, obj, "class")
            for attr, member in list(vars(obj).items()):
                if attr.startswith("_"):
                    continue
                func = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
                if inspect.isroutine(func):
                    _describe(out, seen, top, mod.__name__, f"{qual}.{attr}", func, "method")
        else:
            _describe(out, seen, top, mod.__name__, qual, obj, "function")


def _walk(top, max_submodules):
    """The package and up to ``max_submodules`` public submodules, breadth first."""
    queue = [top]
    yielded = 0
    while queue:
        name = queue.pop(0)
        try:
            mod = importlib.import_module(name)
        except BaseException as e:  # noqa: BLE001 - SystemExit and friends from imported code too
            yield name, None, f"{type(e).__name__}: {e}"[:300]
            continue
        yield name, mod, None
        path = getattr(mod, "__path__", None)
        if not path:
            continue
        for info in sorted(pkgutil.iter_modules(path), key=lambda i: i.name):
            if yielded >= max_submodules:
                return
            if info.name.startswith("_") or info.name in _SKIP_PARTS:
                continue
            queue.append(f"{name}.{info.name}")
            yielded += 1


def main():
    job = json.loads(sys.stdin.read())
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    warnings.simplefilter("ignore")
    seen = _Seen(job["max_apis_per_module"])
    for top in job["modules"]:
        _emit(out, event="start", module=top)
        imported = 0
        for name, mod, err in _walk(top, job["max_submodules"]):
            if err:
                _emit(out, event="error", module=name, error=err)
                continue
            imported += 1
            try:
                _introspect(out, seen, top, mod)
            except BaseException as e:  # noqa: BLE001
                _emit(out, event="error", module=name, error=f"introspection: {type(e).__name__}: {e}"[:300])
        _emit(out, event="done", module=top, imported=imported, capped=seen.counts.get(top, 0) >= seen.cap)


if __name__ == "__main__":
    main()
