"""The fine-tuning stage (the book's 5.3.2): unfreeze the top of a nested pretrained base.

The job calls :func:`unfreeze` between the two training stages, then recompiles with the
``fit.fine_tune`` optimizer (changing ``trainable`` only takes effect after a compile).
"""

from __future__ import annotations

from dlrun.errors import ModelBuildError, did_you_mean

_SHOWN = 25  # names listed in full in an error; longer lists show their ends (the top is what one unfreezes)


def unfreeze(model, spec) -> dict:
    """Make ``spec.layer`` (a nested model) trainable from its layer ``spec.unfreeze_from`` on;
    every layer before it stays frozen. Returns facts about what is now trainable."""
    nested = {layer.name: layer for layer in model.layers if hasattr(layer, "layers")}
    base = nested.get(spec.layer)
    if base is None:
        if not nested:
            raise ModelBuildError(f"fit.fine_tune.layer: the model has no nested model to fine-tune (its layers: "
                                  f"{_listing([layer.name for layer in model.layers])}) — add a Pretrained layer")
        raise ModelBuildError(f"fit.fine_tune.layer: the model has no nested model '{spec.layer}'"
                              f"{did_you_mean(spec.layer, nested)} (nested models: {_listing(list(nested))})")
    names = [layer.name for layer in base.layers]
    if spec.unfreeze_from not in names:
        raise ModelBuildError(f"fit.fine_tune.unfreeze_from: {spec.layer} has no layer '{spec.unfreeze_from}'"
                              f"{did_you_mean(spec.unfreeze_from, names)} (its layers: {_listing(names)})")
    start = names.index(spec.unfreeze_from)
    # The book's loop: set_trainable flips to True at block5_conv1 and stays True after it.
    base.trainable = True
    for index, layer in enumerate(base.layers):
        layer.trainable = index >= start
    with_weights = [layer for layer in base.layers if layer.weights]
    return {
        "fine_tune_layer": spec.layer,
        "unfreeze_from": spec.unfreeze_from,
        "trainable_layers": sum(1 for layer in with_weights if layer.trainable),
        "frozen_layers": sum(1 for layer in with_weights if not layer.trainable),
        "trainable_params": _count(model.trainable_weights),
        "non_trainable_params": _count(model.non_trainable_weights),
    }


def _count(weights) -> int:
    total = 0
    for w in weights:
        size = 1
        for dim in w.shape:
            size *= int(dim)
        total += size
    return total


def _listing(names: list[str]) -> str:
    if len(names) <= _SHOWN:
        return ", ".join(names)
    return f"{', '.join(names[:3])}, …, {', '.join(names[-12:])} ({len(names)} in all)"
