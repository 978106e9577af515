"""The recipe's ``search:`` section (``dlrun tune``) and its load-time checks.

    search:
      space:
        model.layers[0].Dense.units: {int: [16, 128], step: 16}
        model.layers[1].Dropout.rate: {float: [0.0, 0.5], step: 0.1}
        compile.optimizer.RMSprop.learning_rate: {log_uniform: [1.0e-4, 1.0e-2]}
        fit.batch_size: {choice: [16, 32]}
      objective: {metric: val_loss}          # direction: from the name unless given
      budget: {trials: 20, minutes: 30}
      sampler: tpe                           # random | grid | tpe
      pruning: true                          # median pruner on per-epoch (per-fold) values
      kfold: {k: 3}                          # optional: score each trial by its K-fold mean

Every space key is a ``--set`` dotted path: a trial is the recipe with its values applied as
``--set`` overrides. Never imports tensorflow, keras, mlflow or optuna.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from dlrun.errors import did_you_mean
from dlrun.metric_direction import lower_is_better
from dlrun.recipe.schema_base import Strict

_KINDS = ("choice", "int", "float", "log_uniform")
Scalar = bool | int | float | str | None


class SearchParam(BaseModel):
    """One dimension: ``{choice: [...]}``, ``{int: [lo, hi], step: n}``, ``{float: [lo, hi], step: x}``
    or ``{log_uniform: [lo, hi]}``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    kind: Literal["choice", "int", "float", "log_uniform"]
    values: list[Scalar] = Field(default_factory=list)  # choice only
    low: float | None = None
    high: float | None = None
    step: float | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_recipe_form(cls, value: Any) -> Any:
        if not isinstance(value, dict) or "kind" in value:
            return value
        kinds = [k for k in value if k in _KINDS]
        extra = [k for k in value if k not in (*_KINDS, "step")]
        if len(kinds) != 1 or extra:
            raise ValueError(f"write a dimension as one of {{choice: [...]}}, {{int: [low, high], step: n}}, "
                             f"{{float: [low, high], step: x}}, {{log_uniform: [low, high]}} (got keys "
                             f"{', '.join(map(str, value)) or 'none'})")
        kind, spec = kinds[0], value[kinds[0]]
        if kind == "choice":
            if not isinstance(spec, list) or not spec:
                raise ValueError("choice takes a non-empty list of values")
            if any(isinstance(v, (list, dict)) for v in spec):
                raise ValueError("choice values must be single values (numbers, strings, booleans, null)")
            if "step" in value:
                raise ValueError("step applies to int and float only")
            return {"kind": kind, "values": spec}
        if not isinstance(spec, list) or len(spec) != 2 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in spec):
            raise ValueError(f"{kind} takes [low, high], two numbers")
        return {"kind": kind, "low": spec[0], "high": spec[1], "step": value.get("step")}

    @model_validator(mode="after")
    def _consistent(self) -> "SearchParam":
        if self.kind == "choice":
            return self
        low, high = self.low, self.high
        if not (math.isfinite(low) and math.isfinite(high)) or low > high:
            raise ValueError(f"{self.kind}: need low <= high, both finite (got [{low}, {high}])")
        if self.kind == "int":
            if low != int(low) or high != int(high) or (self.step is not None and self.step != int(self.step)):
                raise ValueError("int: low, high and step must be whole numbers")
        if self.kind == "log_uniform":
            if low <= 0:
                raise ValueError("log_uniform: low must be > 0")
            if self.step is not None:
                raise ValueError("log_uniform takes no step (use float with a step, or choice)")
        if self.step is not None and self.step <= 0:
            raise ValueError("step must be > 0")
        return self

    @model_serializer
    def _to_recipe_form(self) -> Any:
        if self.kind == "choice":
            return {"choice": list(self.values)}
        cast = int if self.kind == "int" else float
        out: dict[str, Any] = {self.kind: [cast(self.low), cast(self.high)]}
        if self.step is not None:
            out["step"] = cast(self.step)
        return out

    def grid(self) -> list | None:
        """Every value, when the dimension is finite (choice, stepped int/float); else None."""
        if self.kind == "choice":
            return list(self.values)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.kind == "float" and self.step is not None:
            count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
            return [round(self.low + i * self.step, 12) for i in range(count)]
        return None

    def extremes(self) -> list:
        """The values checked against the recipe at load time."""
        if self.kind == "choice":
            return list(self.values)
        cast = int if self.kind == "int" else float
        return [cast(self.low), cast(self.high)]


class Objective(Strict):
    metric: str = Field(default="val_loss", description="a per-epoch metric (val_loss, val_mae…) or a summary key")
    direction: Literal["minimize", "maximize"] | None = Field(default=None, description="default: from the name")

    @property
    def resolved_direction(self) -> str:
        if self.direction is not None:
            return self.direction
        return "minimize" if lower_is_better(self.metric) else "maximize"


class Budget(Strict):
    trials: int | None = Field(strict=True, default=None, ge=1, lt=2**31,
                               description="trials in the study in all (a re-run resumes up to it); default 10, "
                                           "or the grid's size")
    minutes: float | None = Field(default=None, gt=0, description="wall-clock limit of one `dlrun tune` call")


class TuneKFold(Strict):
    k: int = Field(strict=True, default=3, ge=2, lt=2**31)


class PruningSpec(Strict):
    enabled: bool = True
    startup_trials: int = Field(strict=True, default=2, ge=0, description="complete trials before any pruning")
    warmup_steps: int = Field(strict=True, default=0, ge=0, description="epochs (folds) never pruned")

    @model_validator(mode="before")
    @classmethod
    def _from_bool(cls, value: Any) -> Any:
        return {"enabled": value} if isinstance(value, bool) else value


class SearchSpec(Strict):
    space: dict[str, SearchParam] = Field(min_length=1)
    objective: Objective = Field(default_factory=Objective)
    budget: Budget = Field(default_factory=Budget)
    sampler: Literal["random", "grid", "tpe"] = "tpe"
    pruning: PruningSpec = Field(default_factory=PruningSpec)
    kfold: TuneKFold | None = None

    @model_validator(mode="after")
    def _grid_is_finite(self) -> "SearchSpec":
        if self.sampler == "grid":
            endless = [k for k, p in self.space.items() if p.grid() is None]
            if endless:
                raise ValueError(f"sampler grid needs finite dimensions (choice, int, float with a step); "
                                 f"not: {', '.join(endless)}")
        return self

    def grid_size(self) -> int | None:
        sizes = [p.grid() for p in self.space.values()]
        return None if any(s is None for s in sizes) else math.prod(len(s) for s in sizes)

    def identity(self) -> dict:
        """What makes a study: the space, objective, sampler, pruning and K-fold (the budget does not)."""
        return self.model_dump(mode="json", exclude={"budget"})


def set_text(key: str, value: Any) -> str:
    """The ``--set`` override that applies one searched value (JSON is YAML)."""
    return f"{key}={json.dumps(value)}"


# --------------------------------------------------------------------------- load-time checks


def _walk(resolved: Any, path: tuple) -> str | None:
    """Why ``path`` cannot be set in the resolved recipe, or None. The last key may be new
    inside an existing mapping (a Keras argument not written yet)."""
    from dlrun.recipe.yaml_source import format_path

    node = resolved
    for depth, part in enumerate(path):
        last = depth == len(path) - 1
        here = format_path(path[:depth]) or "the recipe"
        if isinstance(part, int):
            if not isinstance(node, list):
                return f"{here} is not a list"
            if part >= len(node):
                return f"{here} has {len(node)} items; no index {part}"
            node = node[part]
            continue
        if not isinstance(node, dict):
            hint = (f"; write it as {{{node}: {{argument: value}}}} to search its arguments"
                    if isinstance(node, str) else "")
            return f"{here} is {json.dumps(node)}, not a mapping{hint}"
        if part not in node:
            if last:
                return None
            return f"no key '{part}' in {here}{did_you_mean(str(part), [str(k) for k in node])}"
        node = node[part]
    return None


def _objective_issues(recipe) -> Iterator[tuple[tuple, str, bool]]:
    """Trials are scored on validation data, never on the test split (that would tune to it)."""
    from dlrun.recipe.data_schema import STREAMED_SOURCES

    metric, where = recipe.search.objective.metric, ("search", "objective", "metric")
    if metric.startswith("test_") or "_test_" in metric:
        yield where, "a search must not be scored on the test split (it would be tuned to it): use a val_ metric", False
    elif (metric.startswith("val_") and recipe.search.kfold is None and recipe.evaluation.protocol == "holdout"
          and recipe.data.source not in STREAMED_SOURCES and recipe.data.split.validation == "none"):
        yield where, (f"'{metric}' needs a validation part: set data.split.validation (e.g. {{fraction: 0.2}}) "
                      f"or score trials by K-fold (search.kfold: {{k: 3}})"), False


def search_issues(raw: dict, recipe) -> Iterator[tuple[tuple, str, bool]]:
    """``(recipe path, message, at_key)`` for every space path the recipe lacks and every
    searched value the recipe would refuse (each bound or choice tried as its ``--set``)."""
    from pydantic import ValidationError

    from dlrun.errors import RecipeError
    from dlrun.recipe.catalog import check_recipe_objects
    from dlrun.recipe.loading import apply_override, parse_dotted
    from dlrun.recipe.schema import Recipe
    from dlrun.recipe.validation import pydantic_issues
    from dlrun.recipe.yaml_source import SourceMap, format_path

    from dlrun.recipe.reads import read_paths

    yield from _objective_issues(recipe)
    resolved = recipe.model_dump(mode="json")
    reads = dict(read_paths(raw))
    for key, param in recipe.search.space.items():
        where = ("search", "space", key)
        path = parse_dotted(key)
        if path is None:
            yield where, "not a dotted recipe path (e.g. model.layers[0].Dense.units)", True
            continue
        if path[0] == "search":
            yield where, "the search cannot search itself", True
            continue
        problem = _walk(resolved, path)
        if problem:
            yield where, f"no such recipe path: {problem}", True
            continue
        for value in param.extremes():
            variant = copy.deepcopy(raw)
            try:
                for i, text in enumerate(("search=null", set_text(key, value))):
                    apply_override(variant, SourceMap(), text, i)
            except RecipeError as exc:
                yield where, f"{json.dumps(value)} cannot be set: {exc.issues[0].message}", True
                break
            chosen = [p for p, text in read_paths(variant) if reads.get(p) != text]
            if chosen:  # trials set values as --set does, which the reach rule leaves to the user
                yield where, (f"a search may not choose a file the recipe reads ({format_path(chosen[0])}): name "
                              f"the file in the recipe"), True
                break
            found = [(p, m) for p, m, _ in check_recipe_objects(variant)]
            if not found:
                try:
                    Recipe.model_validate(variant)
                except ValidationError as exc:
                    found = [(p, m) for p, m, _ in pydantic_issues(exc, Recipe)]
            if found:
                p, m = found[0]
                yield where, f"the value {json.dumps(value)} does not fit the recipe: {format_path(p)}: {m}", True
                break
