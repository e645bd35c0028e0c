"""Parse JSON that is almost JSON, and say exactly what had to be repaired.

Some community-contributed seed files (Gorilla's apizoo) carry trailing commas, a missing comma
between two objects, or a string cut off at the end of a line. Rejecting them would lose real API
docs; guessing silently would hide data problems. So each repair is driven by the strict parser's
own error position, applied minimally, and reported with its line number.
"""

from __future__ import annotations

import json
import re

from raypipe.seeds.records import SeedFormatError

MAX_REPAIRS = 1000
_NEXT_IS_CLOSER = re.compile(r"\s*[}\]]")


def _open_brackets(text: str) -> list[str]:
    """The brackets still open at the end of ``text``, ignoring those inside strings."""
    stack: list[str] = []
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            stack.append(ch)
        elif ch in "]}" and stack:
            stack.pop()
    return stack


def _repair_once(text: str, err: json.JSONDecodeError) -> tuple[str, str, int] | None:
    """One minimal edit at the strict parser's error position: (new text, what, where), or None."""
    pos = err.pos
    before = text[:pos].rstrip()
    if pos >= len(text.rstrip()) and err.msg.startswith(("Expecting ',' delimiter", "Expecting value")):
        closers = "".join("]" if b == "[" else "}" for b in reversed(_open_brackets(text)))
        if closers and not before.endswith(","):
            return text.rstrip() + closers, f"appended {closers!r} to close brackets left open at end of file", pos
    if err.msg.startswith(("Expecting property name", "Expecting value")) and before.endswith(","):
        if _NEXT_IS_CLOSER.match(text, pos):
            cut = len(before) - 1
            return text[:cut] + text[cut + 1 :], "removed trailing comma", cut
    if err.msg.startswith("Expecting ',' delimiter") and before.endswith(("}", "]", '"')):
        return text[:pos] + "," + text[pos:], "inserted missing comma", pos
    if err.msg.startswith("Invalid control character") and text[pos] in "\r\n":
        if _NEXT_IS_CLOSER.match(text, pos):
            return text[:pos] + '"' + text[pos:], "closed string left open at end of line", pos
        return text[:pos] + "\\n" + text[pos + 1 :], "escaped raw newline inside string", pos
    if err.msg.startswith("Extra data") and not text[pos:].strip(" \t\r\n,;"):
        return text[:pos], "dropped stray characters after the JSON value", pos
    return None


def loads_lenient(text: str, name: str) -> tuple[object, list[str]]:
    """``json.loads`` that repairs the defects above; returns the value and one line per repair.

    Line numbers in repairs refer to the original file. Raises SeedFormatError naming the file,
    line and column when a defect is not repairable.
    """
    repairs: list[str] = []
    joined_lines = 0  # raw newlines escaped so far: later positions sit that many lines lower
    while True:
        try:
            return json.loads(text), repairs
        except json.JSONDecodeError as err:
            fixed = _repair_once(text, err) if len(repairs) < MAX_REPAIRS else None
            if fixed is None:
                raise SeedFormatError(
                    f"{name} line {err.lineno + joined_lines} column {err.colno}: invalid JSON ({err.msg})"
                    + (f" after {len(repairs)} repairs" if repairs else "")
                ) from None
            new_text, what, pos = fixed
            line = text.count("\n", 0, pos) + 1 + joined_lines
            repairs.append(what if "end of file" in what else f"{what} at line {line}")
            joined_lines += what.startswith("escaped raw newline")
            text = new_text
