"""Rows that reach the driver: a counter around Ray Data's ways of pulling rows into the caller.

Why: at Common Crawl scale the driver may handle files, shards and bounded summaries, never one row
per document (issue 14). The only way rows reach the driver process is through a consuming call on
a ``Dataset`` or its ``DataIterator``; ``install()`` wraps those in this process and counts the rows
each one hands back, by method and by the first calling line outside Ray and this module, so a
growing count names the line that causes it.

Nested calls count once: ``take`` runs ``iter_rows``, which runs ``iter_batches``; only the
outermost call of a thread counts. Calls that return object references (``to_arrow_refs``,
``iter_internal_ref_bundles``) move no rows into the driver by themselves and are not counted;
``ray.get`` on a task's return value is not seen either (the pipeline's tasks return summaries).
"""

from __future__ import annotations

import functools
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Methods that return rows to the caller: (class attribute path, how the result is counted).
# "iter": a generator of batches or rows; "len": a value whose len() is the row count.
_DATASET = {
    "iter_batches": "iter",
    "iter_rows": "iter",
    "iter_torch_batches": "iter",
    "to_pandas": "len",
    "take": "len",
    "take_all": "len",
    "take_batch": "len",
    "unique": "len",
}
_ITERATOR = {"iter_batches": "iter", "iter_rows": "iter", "iter_torch_batches": "iter"}
_HERE = str(Path(__file__).resolve())


def rows_in(value: Any) -> int:
    """Rows in one batch, row or result: a pandas frame, an Arrow table, a dict of columns, a list."""
    if isinstance(value, dict):
        # a batch in "numpy" format (column -> array) or one row (column -> value)
        first = next(iter(value.values()), None)
        return len(first) if hasattr(first, "__len__") and not isinstance(first, (str, bytes)) else 1
    if hasattr(value, "num_rows"):
        return int(value.num_rows)
    if hasattr(value, "__len__"):
        return len(value)
    return 1


@dataclass
class DriverRows:
    """The count so far: in total, per method, and per calling line (``file:line``)."""

    total: int = 0
    by_method: Counter = field(default_factory=Counter)
    by_caller: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, method: str, caller: str, rows: int) -> None:
        with self._lock:
            self.total += rows
            self.by_method[method] += rows
            self.by_caller[caller] += rows

    def reset(self) -> None:
        with self._lock:
            self.total = 0
            self.by_method.clear()
            self.by_caller.clear()

    def to_json(self, top: int = 10, root: Path | None = None) -> dict[str, Any]:
        """The counts, callers as paths relative to ``root`` where they lie under it."""
        callers = self.by_caller.most_common(top)
        return {
            "total": self.total,
            "by_method": dict(self.by_method.most_common()),
            "by_caller": {(_relative(c, root) if root else c): n for c, n in callers},
        }


COUNTER = DriverRows()
_depth = threading.local()
_installed: list[tuple[type, str, Callable]] = []


def _caller() -> str:
    """The first frame outside Ray and this module: the line of our code that asked for the rows."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if name != _HERE and "/ray/" not in name and not name.endswith(("functools.py", "contextlib.py")):
            return f"{name}:{frame.f_lineno}"
        frame = frame.f_back
    return "?"


def _relative(caller: str, root: Path) -> str:
    """``caller`` relative to ``root`` when it lies under it (shorter reports)."""
    try:
        path, line = caller.rsplit(":", 1)
        return f"{Path(path).resolve().relative_to(root)}:{line}"
    except ValueError:
        return caller


class _Outer:
    """Marks the thread as inside a counted call, so the calls it makes in turn do not count."""

    def __enter__(self) -> bool:
        level = getattr(_depth, "level", 0)
        _depth.level = level + 1
        return level == 0

    def __exit__(self, *exc: object) -> None:
        _depth.level -= 1


def _wrap(method: str, kind: str, original: Callable, counter: DriverRows) -> Callable:
    if kind == "len":

        @functools.wraps(original)
        def counted(*args: Any, **kwargs: Any) -> Any:
            with _Outer() as outer:
                result = original(*args, **kwargs)
            if outer:
                counter.add(method, _caller(), rows_in(result))
            return result

        return counted

    @functools.wraps(original)
    def counted_iter(*args: Any, **kwargs: Any) -> Any:
        outer = getattr(_depth, "level", 0) == 0
        caller = _caller() if outer else ""
        with _Outer():
            inner = original(*args, **kwargs)
        return _count_items(method, caller, inner, counter) if outer else inner

    return counted_iter


def _count_items(method: str, caller: str, inner: Any, counter: DriverRows) -> Iterator[Any]:
    """Yield what ``inner`` yields, counting each item's rows; inner calls run as nested ones."""
    it = iter(inner)
    while True:
        with _Outer():
            try:
                item = next(it)
            except StopIteration:
                return
        counter.add(method, caller, rows_in(item))
        yield item


def install(counter: DriverRows = COUNTER) -> DriverRows:
    """Wrap the row-returning methods of ``Dataset`` and ``DataIterator`` in this process (once)."""
    if _installed:
        return counter
    from ray.data import Dataset
    from ray.data.iterator import DataIterator

    for cls, methods in ((Dataset, _DATASET), (DataIterator, _ITERATOR)):
        for method, kind in methods.items():
            original = getattr(cls, method, None)
            if original is None:
                continue
            _installed.append((cls, method, original))
            setattr(cls, method, _wrap(method, kind, original, counter))
    return counter


def uninstall() -> None:
    """Put the original methods back."""
    while _installed:
        cls, method, original = _installed.pop()
        setattr(cls, method, original)
