"""Tables of text cells: a rich table on a terminal, aligned plain text otherwise.

Callers format their own cells; the first column is left-aligned, the others right-aligned.
"""

from __future__ import annotations

from typing import Any, Sequence


def plain_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The cells as aligned columns, two spaces apart, no trailing spaces."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)])


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]], title: str, tty: bool,
                 row_styles: Sequence[dict[str, Any]] | None = None) -> None:
    """Print the table: rich, with ``title``, on a terminal; otherwise the plain text alone (no title).

    ``row_styles``: one dict per row of keyword arguments for rich's ``Table.add_row``
    (``style``, ``end_section``); ignored for plain text.
    """
    if not tty:
        print(plain_table(header, rows))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for i, row in enumerate(rows):
        table.add_row(*row, **(row_styles[i] if row_styles else {}))
    Console().print(table)
