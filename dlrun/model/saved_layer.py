"""The recipe layer ``SavedModel``: a model trained earlier (another recipe's ``model.keras``)
used as a layer of this one (the book's 7.1.6 "models as layers"), frozen unless
``trainable: true``. Loaded in Keras' safe mode (:mod:`dlrun.model.saved`); a relative ``path``
is read from the recipe's folder."""

from __future__ import annotations

from dlrun.errors import ModelBuildError


def make_saved_model_layer(args: dict, context, where: str):
    from dlrun.data.files import resolve_path
    from dlrun.model.saved import load_keras_model

    path = resolve_path(str(args["path"]), context.base_dir)
    model = load_keras_model(path, compile=False, where=f"{where}.path")
    trainable = args.get("trainable", False)
    if not isinstance(trainable, bool):
        raise ModelBuildError(f"{where}: trainable must be true or false, not {trainable!r}")
    model.trainable = trainable
    if args.get("name"):
        model.name = str(args["name"])
    context.facts.setdefault("saved_models", {})[model.name] = {
        "path": str(path.resolve()), "trainable": trainable, "params": int(model.count_params())}
    return model
