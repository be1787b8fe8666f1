"""Text formatting shared by the run's model table, the benchmark and the sweep report: one SI
suffix style and one plain-text table renderer. No torch, no numpy."""

from __future__ import annotations

from collections.abc import Collection, Sequence


def si(value: float | None, digits: int = 3) -> str:
    """2964528 -> "2.96M", 24496 -> "24.5k", 512 -> "512", None -> "-"."""
    if value is None:
        return "-"
    for divisor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= divisor:
            return f"{value / divisor:.{digits}g}{suffix}"
    return f"{value:g}"


def text_table(header: Sequence[str], rows: Sequence[Sequence], *,
               right: Collection[int] = (), rule: bool = True, indent: str = "",
               max_width: int | None = None, shrink: Collection[int] = ()) -> list[str]:
    """Columns padded to their widest cell (left-aligned, or right-aligned for the column
    numbers in `right`), a rule of dashes under each column's header (which also tells a
    reader of the text where each column starts and ends); one string per line.

    With `max_width`, the widest of the columns numbered in `shrink` is narrowed (its cells
    cut with "…", to no less than 8 characters) until the lines fit in `max_width`."""
    cells = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    if max_width is not None:
        over = len(indent) + sum(widths) + 2 * (len(widths) - 1) - max_width
        while over > 0 and (narrow := [i for i in shrink if widths[i] > 8]):
            widest = max(narrow, key=lambda i: widths[i])
            cut = min(over, widths[widest] - 8)
            widths[widest] -= cut
            over -= cut
        cells = [[cell if len(cell) <= widths[i] else cell[: widths[i] - 1] + "…"
                  for i, cell in enumerate(row)] for row in cells]

    def line(row: list[str]) -> str:
        return indent + "  ".join(
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))).rstrip()

    lines = [line(cells[0])]
    if rule:
        lines.append(indent + "  ".join("-" * width for width in widths))
    return lines + [line(row) for row in cells[1:]]
