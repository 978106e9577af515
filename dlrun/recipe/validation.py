"""Turn pydantic's validation errors into located, readable recipe issues."""

from __future__ import annotations

import types
import typing
from typing import Any, Iterator

from pydantic import BaseModel, ValidationError

from dlrun.errors import did_you_mean
from dlrun.recipe.yaml_source import Path_


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _union_members(tp: Any) -> list[Any]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [_unwrap(a) for a in typing.get_args(tp)]
    return []


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _tag_of(model: type[BaseModel]) -> set[str]:
    """The discriminator values a union member answers to (its Literal field values)."""
    tags = set()
    for field in model.model_fields.values():
        if typing.get_origin(field.annotation) is typing.Literal and field.is_required():
            tags.update(str(v) for v in typing.get_args(field.annotation))
    return tags


def walk_loc(root: type[BaseModel], loc: tuple) -> tuple[Path_, Any]:
    """Map a pydantic ``loc`` to the recipe path (dropping union-member labels) and
    return the schema type found at that path."""
    path: list[Any] = []
    tp: Any = root
    for part in loc:
        tp = _unwrap(tp)
        members = _union_members(tp)
        if members:
            chosen = next((m for m in members if _is_model(m) and str(part) in _tag_of(m)), None)
            if chosen is None:  # a plain union label such as 'int' or "literal['none']"
                chosen = next((m for m in members if _is_model(m) and part in m.model_fields), None)
                if chosen is None:
                    tp = None
                    continue
                tp = chosen
            else:
                tp = chosen
                continue
        if isinstance(part, int):
            path.append(part)
            args = typing.get_args(tp) if tp is not None else ()
            tp = args[0] if args else None
        elif _is_model(tp) and part in tp.model_fields:
            path.append(part)
            tp = tp.model_fields[part].annotation
        elif typing.get_origin(tp) is dict:
            path.append(part)
            tp = typing.get_args(tp)[1]
        elif part in ("function-after", "function-before", "function-plain"):
            continue
        else:
            path.append(part)
            tp = None
    return tuple(path), _unwrap(tp)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def pydantic_issues(exc: ValidationError, root: type[BaseModel]) -> Iterator[tuple[Path_, str, bool]]:
    """Yield (recipe path, message, at_key) for each error, once per path."""
    seen: set[Path_] = set()
    for err in exc.errors(include_url=False):
        kind, loc, ctx = err["type"], err["loc"], err.get("ctx", {})
        if kind == "extra_forbidden":
            parent, model = walk_loc(root, loc[:-1])
            key = str(loc[-1])
            allowed = list(model.model_fields) if _is_model(model) else []
            hint = did_you_mean(key, allowed) or (f" (allowed: {', '.join(allowed)})" if allowed else "")
            path, message, at_key = parent + (key,), f"unknown key '{key}'{hint}", True
        elif kind == "missing":
            path, _ = walk_loc(root, loc)
            message, at_key = f"missing required key '{path[-1]}'", False
            path = path[:-1]
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            path, _ = walk_loc(root, loc)
            field = str(ctx.get("discriminator", "")).strip("'")
            expected = [t.strip().strip("'") for t in str(ctx.get("expected_tags", "")).split(",")]
            if kind == "union_tag_invalid":
                tag = str(ctx.get("tag"))
                message = f"unknown {field} '{tag}'{did_you_mean(tag, expected)} (one of: {', '.join(expected)})"
                path, at_key = path + (field,), False
            else:
                message, at_key = f"missing '{field}' (one of: {', '.join(expected)})", False
        else:
            path, _ = walk_loc(root, loc)
            text = err["msg"].removeprefix("Value error, ")
            message, at_key = f"{text[0].lower()}{text[1:]} (got {_describe(err['input'])})", False
            if kind in ("literal_error", "enum"):
                message = f"{text[0].lower()}{text[1:]}{did_you_mean(str(err['input']), _literal_choices(ctx))}"
        if path in seen:
            continue
        seen.add(path)
        yield path, message, at_key


def _literal_choices(ctx: dict) -> list[str]:
    expected = str(ctx.get("expected", ""))
    return [p.strip().strip("'") for p in expected.replace(" or ", ",").split(",") if p.strip()]
