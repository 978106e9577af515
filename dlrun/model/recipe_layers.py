"""Layers dlrun builds itself from a recipe (not Keras classes); the catalog's
``RECIPE_LAYERS`` lists their arguments for ``dlrun validate``.

Each factory takes ``(args, context, where)``: the recipe arguments, the
:class:`~dlrun.model.builder.BuildContext`, and the recipe place for error messages.
"""

from __future__ import annotations

from typing import Any, Callable


def _pretrained(args: dict, context, where: str):
    from dlrun.model.pretrained import make_pretrained

    return make_pretrained(args, context, where)


def _pretrained_embedding(args: dict, context, where: str):
    from dlrun.model.embeddings import make_pretrained_embedding

    return make_pretrained_embedding(args, context, where)


def _saved_model(args: dict, context, where: str):
    from dlrun.model.saved_layer import make_saved_model_layer

    return make_saved_model_layer(args, context, where)


RECIPE_LAYERS: dict[str, Callable[[dict, Any, str], Any]] = {
    "Pretrained": _pretrained,
    "PretrainedEmbedding": _pretrained_embedding,
    "SavedModel": _saved_model,
}
