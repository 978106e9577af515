"""The ensemble's scores next to each member's: rich on a terminal, plain text otherwise."""

from __future__ import annotations

from dlrun.ensembling.core import EnsembleResult


def _fmt(value) -> str:
    return "—" if value is None else f"{value:.4f}"


def table_cells(result: EnsembleResult) -> tuple[list[str], list[list[str]]]:
    keys = list(result.ensemble)
    header = ["model", "weight", *keys]
    rows = [[m["label"], f"{m['weight']:.3f}", *(_fmt(m["metrics"].get(k)) for k in keys)] for m in result.members]
    rows.append(["mean of members", "", *(_fmt(result.members_mean.get(k)) for k in keys)])
    rows.append([f"ensemble ({result.method})", "1.000", *(_fmt(result.ensemble.get(k)) for k in keys)])
    return header, rows


def plain_table(result: EnsembleResult) -> str:
    header, rows = table_cells(result)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), *(line(r) for r in rows)])


def print_table(result: EnsembleResult, tty: bool) -> None:
    title = (f"{result.recipe}: ensemble of {len(result.members)} models on {result.n_test} test samples "
             f"(weights: {result.weights_from})")
    if not tty:
        print(title)
        print(plain_table(result))
        return
    from rich.console import Console
    from rich.table import Table

    header, rows = table_cells(result)
    table = Table(title=title)
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for i, row in enumerate(rows):
        table.add_row(*row, style="bold" if i == len(rows) - 1 else None, end_section=i == len(rows) - 3)
    Console().print(table)
