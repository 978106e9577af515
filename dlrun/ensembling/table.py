"""The ensemble's scores next to each member's: rich on a terminal, plain text otherwise."""

from __future__ import annotations

from dlrun import tables
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
    return tables.plain_table(*table_cells(result))


def print_table(result: EnsembleResult, tty: bool) -> None:
    title = (f"{result.recipe}: ensemble of {len(result.members)} models on {result.n_test} test samples "
             f"(weights: {result.weights_from})")
    if not tty:
        print(title)  # plain text keeps the title as its first line
    header, rows = table_cells(result)
    # the members, then a rule, then the mean of members and the ensemble (bold)
    styles = [{"style": "bold" if i == len(rows) - 1 else None, "end_section": i == len(rows) - 3}
              for i in range(len(rows))]
    tables.render_table(header, rows, title=title, tty=tty, row_styles=styles)
