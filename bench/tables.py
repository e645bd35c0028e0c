"""Printing and Markdown for benchmark results: one table per section, then the ratio lines."""

from __future__ import annotations

from bench.measure import Measure

HEADER = ("run", "docs in", "docs out", "CPU s", "wall s", "docs/s/core")


def measure_row(name: str, m: Measure | str) -> tuple[str, ...]:
    if isinstance(m, str):
        return (name, "", "", "", "", m)
    return (name, str(m.docs_in), str(m.docs_out), f"{m.cpu_s:.2f}", f"{m.wall_s:.2f}", f"{m.rate:.1f}")


def print_table(results: dict[str, Measure | str], title: str = "") -> None:
    rows = [HEADER] + [measure_row(k, v) for k, v in results.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    if title:
        print(f"\n{title}")
    for row in rows:
        print(
            "  "
            + "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )


def ratio_text(value: float | str) -> str:
    return f"{value:.2f}x" if isinstance(value, float) else value


def print_ratios(ratios: dict[str, float | str]) -> None:
    """The closing ``NAME: <ratio>x`` lines (``n/a ...`` where a side is missing)."""
    print()
    for name, value in ratios.items():
        print(f"{name}: {ratio_text(value)}")


def markdown_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def markdown_measures(results: dict[str, Measure | str]) -> str:
    return markdown_table(HEADER, [measure_row(k, v) for k, v in results.items()])
