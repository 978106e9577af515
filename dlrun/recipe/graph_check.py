"""The wiring of a graph model, checked on the raw recipe without TensorFlow.

Yields ``(path, message, at_key)`` like :func:`dlrun.recipe.catalog.check_recipe_objects`:
unknown references (with did-you-mean), cycles (named), unused inputs, nodes that lead to no
output, outputs that are not nodes, a node with the wrong number of inputs for its layer, and
per-output compile settings or data arrays whose names are not the model's. Malformed sections
are left to the schema, which reports them.
"""

from __future__ import annotations

from typing import Any, Iterator

from dlrun.errors import did_you_mean
from dlrun.recipe.yaml_source import Path_

# How many inputs a layer takes when a node applies it: (at least, at most); None = no limit.
# Every other Keras layer takes exactly one; a plugin's unknown layer is not counted.
MULTI_INPUT_LAYERS: dict[str, tuple[int, int | None]] = {
    "Concatenate": (2, None), "Add": (2, None), "Multiply": (2, None), "Average": (2, None),
    "Maximum": (2, None), "Minimum": (2, None), "Subtract": (2, 2), "Dot": (2, 2),
    # Attention layers take [query, value] or [query, value, key].
    "Attention": (2, 3), "AdditiveAttention": (2, 3), "MultiHeadAttention": (2, 3),
}
_MODEL = ("model",)


def layer_name(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        name = next(iter(value))
        return name if isinstance(name, str) else None
    return None


def input_count(name: str) -> tuple[int, int | None]:
    return MULTI_INPUT_LAYERS.get(name, (1, 1))


def loss_is_per_output(loss: Any) -> bool:
    """Whether ``compile.loss`` gives one loss per output (``{age: mse, price: {Huber: {delta: 1}}}``)
    rather than one loss (``mse``, ``{Huber: {delta: 1}}``). The one place this is decided: the
    schema, the graph wiring check and the catalog's loss check all ask here.

    One loss in mapping form has a single key, the loss, whose value is its arguments (a mapping
    of argument names to values) or null; a per-output mapping's values are losses (a name, or a
    one-key ``{Loss: arguments-or-null}``). So a mapping is per output when it has several keys,
    or a value is a name (arguments are never a string). The single-key form ``{K: {N: V}}`` with
    ``V`` a mapping or null fits both readings (output ``K``'s loss ``N``, or loss ``K`` with one
    argument ``N``); it is one loss when ``K`` is a Keras loss name, else per output. Decided by the
    value alone, so it reads the same wherever the model's outputs are not at hand."""
    if not isinstance(loss, dict) or not loss:
        return False
    if len(loss) > 1:
        return True
    (key, value), = loss.items()
    if isinstance(value, str):
        return True
    if not (isinstance(value, dict) and len(value) == 1 and isinstance(next(iter(value.values())), (dict, type(None)))):
        return False  # null, {}, {argument: value}, several arguments: the arguments of loss `key`
    from dlrun.recipe.catalog import catalog  # catalog imports this module

    return key not in catalog()["losses"]


def _refs(node: dict) -> list[tuple[Path_, str]]:
    """A node's input references with their recipe paths; non-strings are the schema's business."""
    inputs = node.get("inputs")
    if isinstance(inputs, str):
        return [(("inputs",), inputs)]
    if isinstance(inputs, list):
        return [(("inputs", i), ref) for i, ref in enumerate(inputs) if isinstance(ref, str)]
    return []


def _mapping(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def check_graph(raw: dict, known_layers: dict) -> Iterator[tuple[Path_, str, bool]]:
    """Every wiring problem of ``raw['model']`` when it is a graph."""
    model = raw.get("model")
    if not isinstance(model, dict) or model.get("type") != "graph":
        yield from _per_output_without_graph(raw)
        return
    inputs, shared, nodes = _mapping(model.get("inputs")), _mapping(model.get("shared")), _mapping(model.get("nodes"))
    for name in nodes:  # each becomes a Keras layer name, which must be unique
        if name in inputs or name in shared:
            what = "an input" if name in inputs else "a shared layer"
            yield _MODEL + ("nodes", name), f"'{name}' names both {what} and a node; give them different names", True
    sources = [str(name) for name in (*inputs, *nodes)]
    used: set[str] = set()
    broken = False  # a wrong reference: "leads to no output" would only repeat it
    for name, node in nodes.items():
        if not isinstance(node, dict):
            continue
        where = _MODEL + ("nodes", name)
        refs = _refs(node)
        for sub, ref in refs:
            used.add(ref)
            if ref == name:
                yield where + sub, f"node '{name}' takes itself as input", False
            elif ref not in inputs and ref not in nodes:
                broken = True
                yield where + sub, f"unknown node or input '{ref}'{did_you_mean(ref, sources)}", False
        layer = node.get("layer")
        if isinstance(node.get("shared"), str):
            ref = node["shared"]
            if ref not in shared:
                broken = True
                hint = did_you_mean(ref, list(shared)) or (" (model.shared declares none)" if not shared else "")
                yield where + ("shared",), f"unknown shared layer '{ref}'{hint}", False
                continue
            layer = shared[ref]
        yield from _count(layer_name(layer), len(refs), node.get("inputs"), where, known_layers)
    yield from _cycles(nodes, inputs)
    outputs = model.get("outputs")
    out_list = [outputs] if isinstance(outputs, str) else [o for o in outputs if isinstance(o, str)] \
        if isinstance(outputs, list) else []
    for i, out in enumerate(out_list):
        path = _MODEL + (("outputs",) if isinstance(outputs, str) else ("outputs", i))
        if out not in nodes:
            what = f"'{out}' is an input, not a node" if out in inputs else f"unknown node '{out}'"
            yield path, f"{what}; outputs name nodes{did_you_mean(out, list(nodes))}", False
        elif out_list.index(out) != i:
            yield path, f"output '{out}' is listed twice", False
    for name in inputs:
        if name not in used:
            yield _MODEL + ("inputs", name), f"input '{name}' is not used by any node", True
    valid_outputs = [out for out in out_list if out in nodes]
    if valid_outputs and len(valid_outputs) == len(out_list) and not broken:  # else other errors say it
        yield from _dead_nodes(nodes, valid_outputs)
    for name in shared:
        if not any(isinstance(n, dict) and n.get("shared") == name for n in nodes.values()):
            yield _MODEL + ("shared", name), f"shared layer '{name}' is not used by any node", True
    if valid_outputs:
        yield from _per_output_names(raw, list(inputs), list(dict.fromkeys(valid_outputs)))


def _count(name: str | None, given: int, inputs: Any, where: Path_, known: dict):
    if name is None or name not in known or given == 0:
        return  # unknown names are reported by the layer check; a plugin's layer is not counted
    least, most = input_count(name)
    if least <= given and (most is None or given <= most):
        return
    if most == 1:
        need = "one input"
    elif most == least:
        need = f"exactly {least} inputs"
    else:
        need = f"at least {least} inputs" if most is None else f"{least} to {most} inputs"
    got = f"{given} input" + ("s" if given != 1 else "")
    hint = "; join several with a merge layer (Concatenate, Add…) first" if most == 1 else ""
    yield where + ("inputs",), f"{name} takes {need}, got {got}{hint}", False


def _cycles(nodes: dict, inputs: dict) -> Iterator[tuple[Path_, str, bool]]:
    """Each cycle once, named in wiring order (``a → b → a``) at its first node."""
    state: dict[str, int] = {}  # 1 visiting, 2 done
    reported: set[frozenset] = set()

    def visit(name: str, trail: list[str]):
        state[name] = 1
        trail.append(name)
        node = nodes.get(name)
        for _, ref in _refs(node) if isinstance(node, dict) else []:
            if ref not in nodes or ref == name:
                continue
            if state.get(ref) == 1:
                loop = trail[trail.index(ref):]
                if frozenset(loop) not in reported:
                    reported.add(frozenset(loop))
                    text = " → ".join([ref, *reversed(loop)])  # as data flows: from a node to its user
                    yield _MODEL + ("nodes", ref), f"the nodes form a cycle: {text}", True
            elif ref not in state:
                yield from visit(ref, trail)
        trail.pop()
        state[name] = 2

    for name in nodes:
        if name not in state:
            yield from visit(name, [])


def _dead_nodes(nodes: dict, outputs: list[str]) -> Iterator[tuple[Path_, str, bool]]:
    """Nodes no output depends on: a forgotten output or a wiring mistake."""
    reached, todo = set(), [o for o in outputs if o in nodes]
    while todo:
        name = todo.pop()
        if name in reached:
            continue
        reached.add(name)
        node = nodes[name]
        todo += [ref for _, ref in (_refs(node) if isinstance(node, dict) else []) if ref in nodes]
    if not outputs:
        return
    for name in nodes:
        if name not in reached:
            yield _MODEL + ("nodes", name), f"node '{name}' leads to no output (add it to model.outputs?)", True


def _per_output_names(raw: dict, input_names: list[str], outputs: list[str]):
    """compile.loss/loss_weights/metrics keyed by output, data arrays keyed by input/output."""
    comp = _mapping(raw.get("compile"))
    loss = comp.get("loss")
    for key, keyed in (("loss", loss_is_per_output(loss)), ("loss_weights", True), ("metrics", True)):
        section = comp.get(key)
        if not keyed or not isinstance(section, dict):
            continue
        for name in section:
            if name not in outputs:
                yield ("compile", key, name), f"unknown output '{name}'{did_you_mean(str(name), outputs)} " \
                                              f"(outputs: {', '.join(outputs)})", True
        if key == "loss":
            for name in outputs:
                if name not in section:
                    yield ("compile", "loss"), f"output '{name}' has no loss", False
    data = _mapping(raw.get("data"))
    for key in _named_data_keys(data):
        names, what = (input_names, "input") if key in ("x", "x_test", "features") else (outputs, "output")
        arrays = data.get(key)
        if not isinstance(arrays, dict):
            continue
        for name in arrays:
            if name not in names:
                yield ("data", key, name), f"unknown model {what} '{name}'{did_you_mean(str(name), names)}", True
        for name in names:
            if name not in arrays:
                yield ("data", key), f"no array for the model {what} '{name}'", False


def _named_data_keys(data: dict) -> tuple[str, ...]:
    """The data keys that may map a graph model's inputs/outputs to arrays or column groups."""
    return {"npz": ("x", "y", "x_test", "y_test"), "csv": ("features", "target")}.get(data.get("source"), ()) \
        if isinstance(data.get("source"), str) else ()


def _per_output_without_graph(raw: dict):
    """Per-output settings and named data arrays need a graph model's named inputs/outputs."""
    comp = _mapping(raw.get("compile"))
    loss = comp.get("loss")
    if loss_is_per_output(loss):
        yield ("compile", "loss"), "a loss per output needs a graph model (model.type: graph) with named outputs", False
    for key in ("loss_weights",):
        if isinstance(comp.get(key), dict):
            yield ("compile", key), f"{key} per output needs a graph model (model.type: graph)", False
    if isinstance(comp.get("metrics"), dict):
        yield ("compile", "metrics"), "metrics per output need a graph model (model.type: graph)", False
    data = _mapping(raw.get("data"))
    for key in _named_data_keys(data):
        if isinstance(data.get(key), dict):
            yield ("data", key), "arrays by input/output name need a graph model (model.type: graph)", False


def check_dict_data_transforms(raw: dict) -> Iterator[tuple[Path_, str, bool]]:
    """Transforms work on one array; named arrays (``data.x: {text: ...}``) get none for now."""
    data, steps = _mapping(raw.get("data")), raw.get("preprocessing")
    if not isinstance(steps, list):
        return
    for i, step in enumerate(steps):
        if not isinstance(step, dict):
            continue
        part = step.get("apply_to", "y" if step.get("transform") == "one_hot" else "x")
        if part not in ("x", "y"):
            continue
        key = {"x": "features", "y": "target"}[part] if data.get("source") == "csv" else part
        if isinstance(data.get(key), dict):
            yield ("preprocessing", i), (f"data.{key} maps arrays to {'inputs' if part == 'x' else 'outputs'} by "
                                         f"name; preprocessing does not apply to named arrays yet: prepare them "
                                         f"in the file, or use preprocessing layers in the model"), False


def graph_layers(raw: dict) -> Iterator[tuple[Path_, Any]]:
    """``(path, layer)`` of each Keras layer a graph model names (its nodes' and shared ones)."""
    model = raw.get("model")
    if not isinstance(model, dict) or model.get("type") != "graph":
        return
    for name, layer in _mapping(model.get("shared")).items():
        yield _MODEL + ("shared", name), layer
    for name, node in _mapping(model.get("nodes")).items():
        if isinstance(node, dict) and "layer" in node:
            yield _MODEL + ("nodes", name, "layer"), node["layer"]


def per_output(section: Any, kind: str) -> Iterator[tuple[Path_, Any]]:
    """``(path, object)`` of each loss or metric written per output (``{age: mse}``)."""
    if kind == "loss" and loss_is_per_output(section):
        for name, loss in section.items():
            yield (name,), loss
    if kind == "metrics" and isinstance(section, dict):
        for name, metrics in section.items():
            for i, metric in enumerate(metrics if isinstance(metrics, list) else []):
                yield (name, i), metric
