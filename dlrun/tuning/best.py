"""The best trial as a recipe file ``dlrun train`` runs as is, and the table of trials."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def best_recipe(loaded, values: dict) -> dict:
    """The base recipe with the best values applied and no ``search`` section (the protocol is
    the recipe's own, not the K-fold used to score trials); its relative file paths (data,
    pretrained weights, embedding files, saved models) made absolute, since the file is
    written elsewhere."""
    from dlrun.recipe.loading import load_recipe, rebase_paths
    from dlrun.tuning.trial import trial_overrides

    resolved = rebase_paths(load_recipe(loaded.path, trial_overrides(loaded, values, None)).resolved, loaded.base_dir)
    resolved.pop("search", None)
    return resolved


def write_best_recipe(loaded, trial, study: str, spec, output: Path | None, output_root: Path) -> Path:
    import yaml

    from dlrun.recipe.loading import load_recipe
    from dlrun.recipe.permissions import granted

    recipe = best_recipe(loaded, dict(trial.params))
    path = Path(output) if output else Path(output_root) / "tuning" / f"{loaded.recipe.name}-best.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    values = "\n".join(f"#   {k}: {v!r}" for k, v in trial.params.items())
    # Its files lie beside the recipe it was tuned from (or where --set put them), outside its own
    # folder: a run of it must allow them.
    allowed = _folders_read(loaded)
    flags = "".join(f"--allow-read {folder} " for folder in allowed)
    header = (f"# Best trial {trial.number} of study {study}: {spec.objective.metric} = {trial.value:.6g} "
              f"({spec.objective.resolved_direction}).\n# Tuned from {loaded.path} with:\n{values}\n"
              f"#   dlrun train {flags}{path.name}\n")
    path.write_text(header + yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True), encoding="utf-8")
    with granted(read=allowed):
        load_recipe(path)  # what is written must load as is
    return path.resolve()


def _folders_read(loaded) -> list[Path]:
    """The fewest folders that hold every file the recipe reads."""
    folders = sorted({path if path.is_dir() else path.parent for _, _, path in loaded.reads})
    return [f for f in folders if not any(f != other and f.is_relative_to(other) for other in folders)]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "—" if value is None else str(value)


def print_trials(result, *, tty: bool) -> None:
    """The trials (number, state, value, seconds, params), the best marked."""
    keys = sorted({k for t in result.trials for k in t["params"]})
    if tty:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"study {result.study} — {result.metric} ({result.direction})")
        for col in ("trial", "state", result.metric, "s", *keys):
            table.add_column(col, justify="right" if col not in ("state",) else "left")
        for t in result.trials:
            mark = " ★" if t["number"] == result.best_trial else ""
            table.add_row(f"{t['number']}{mark}", t["state"], _fmt(t["value"]), _fmt(t["seconds"]),
                          *(_fmt(t["params"].get(k)) for k in keys))
        Console().print(table)
    else:
        print(f"trial state {result.metric} seconds " + " ".join(keys))
        for t in result.trials:
            mark = "*" if t["number"] == result.best_trial else ""
            print(" ".join([f"{t['number']}{mark}", t["state"], _fmt(t["value"]), _fmt(t["seconds"]),
                            *(_fmt(t["params"].get(k)) for k in keys)]))
    if result.best_recipe:
        print(f"best: trial {result.best_trial} {result.metric}={_fmt(result.best_value)} → {result.best_recipe}")
        print(f"  dlrun train {result.best_recipe}")
