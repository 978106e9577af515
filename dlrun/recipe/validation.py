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
    if typing.get_origin(tp) in (typing.Union, types.UnionType):  # nested unions flattened (model | None)
        return [m for a in typing.get_args(tp) for m in (_union_members(_unwrap(a)) or [_unwrap(a)])]
    return []


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _tag_of(model: type[BaseModel], only: str | None = None, default_too: bool = False) -> set[str]:
    """The discriminator values a union member answers to (its required Literal fields' values)."""
    tags = set()
    for name, field in model.model_fields.items():
        if only and name != only:
            continue
        if typing.get_origin(field.annotation) is typing.Literal and (field.is_required() or default_too):
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
        if len([m for m in members if m is not type(None)]) == 1:  # X | None: pydantic adds no label
            tp, members = next(m for m in members if m is not type(None)), []
        if members:
            chosen = next((m for m in members if _is_model(m) and str(part) in _tag_of(m)), None)
            if chosen is None:  # a plain union label such as 'int' or "literal['none']"
                chosen = next((m for m in members if _is_model(m) and part in m.model_fields), None)
                # a callable discriminator's tag for a member whose kind has a default (model: sequential)
                tagged = next((m for m in members if _is_model(m) and str(part) in _tag_of(m, default_too=True)), None)
                if chosen is None and tagged is not None:
                    tp = tagged
                    continue
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
        elif part in ("function-after", "function-before", "function-plain", "[key]"):
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
    found = [_issue(err, root) for err in exc.errors(include_url=False)]
    # A value that may be a word or a mapping (``validation: none | {first: N}``) fails both
    # branches; the mapping branch's complaint is the useful one.
    literal_paths = {path for path, _, _, kind in found if kind == "literal_error"}
    deeper = {p for p in literal_paths for q, _, _, kind in found if kind != "literal_error" and q[: len(p)] == p}
    seen: set[Path_] = set()
    for path, message, at_key, kind in found:
        if (kind == "literal_error" and path in deeper) or path in seen:
            continue
        seen.add(path)
        yield path, message, at_key


def _issue(err: dict, root: type[BaseModel]) -> tuple[Path_, str, bool, str]:
    kind, loc, ctx = err["type"], err["loc"], err.get("ctx", {})
    if kind == "extra_forbidden":
        parent, model = walk_loc(root, loc[:-1])
        key = str(loc[-1])
        allowed = list(model.model_fields) if _is_model(model) else []
        hint = did_you_mean(key, allowed) or (f" (allowed: {', '.join(allowed)})" if allowed else "")
        return parent + (key,), f"unknown key '{key}'{hint}", True, kind
    if kind == "missing":
        path, _ = walk_loc(root, loc)
        return path[:-1], f"missing required key '{path[-1]}'", False, kind
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        path, union = walk_loc(root, loc)
        field = str(ctx.get("discriminator", "")).strip("'").removesuffix("()")  # "type()": a callable's
        expected = sorted({t for m in _union_members(union) if _is_model(m) for t in _tag_of(m, field, True)})
        if kind == "union_tag_invalid":
            tag = str(ctx.get("tag"))
            message = f"unknown {field} '{tag}'{did_you_mean(tag, expected)} (one of: {', '.join(expected)})"
            return path + (field,), message, False, kind
        return path, f"missing '{field}' (one of: {', '.join(expected)})", False, kind
    path, _ = walk_loc(root, loc)
    at_key = bool(loc) and loc[-1] == "[key]"  # a mapping key that is refused: point at the key
    text = err["msg"].removeprefix("Value error, ")
    text = text[0].lower() + text[1:]
    if kind in ("literal_error", "enum"):
        return path, f"{text}{did_you_mean(str(err['input']), _literal_choices(ctx))}", False, kind
    if isinstance(err["input"], dict):  # a whole section: its location says enough
        return path, text, at_key, kind
    return path, f"{text} (got {_describe(err['input'])})", at_key, kind


def _literal_choices(ctx: dict) -> list[str]:
    expected = str(ctx.get("expected", ""))
    return [p.strip().strip("'") for p in expected.replace(" or ", ",").split(",") if p.strip()]
