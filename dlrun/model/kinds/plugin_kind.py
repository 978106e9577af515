"""The ``plugin`` kind: ``model: {type: plugin, class: my_pkg.models:MyGAN, args: {...}}``.

The class comes from a module the recipe lists under ``plugins:`` (the validator refuses any
other) and must subclass ``keras.Model`` — checked before it is called, as every plugin object
is (:mod:`dlrun.model.plugins`). It is made as ``Class(**args)`` (plus ``input_shape=`` when its
constructor takes one and the recipe's args don't give it) and compiled with the recipe's
``optimizer`` and, when given, ``loss``, ``metrics`` and ``generator_optimizer``. To be saved
with the run and read back (``dlrun generate``, ``--resume``) it needs ``get_config`` and
``@keras.saving.register_keras_serializable``; to resume with several optimizers it creates
their variables in ``build_optimizers()`` (see :class:`dlrun.model.kinds.gan.GAN`).
"""

from __future__ import annotations

import inspect

from dlrun.errors import ModelBuildError


def plugin_class(spec):
    """The class ``spec.class_`` names, checked to be a ``keras.Model`` subclass."""
    import keras

    from dlrun.model.plugins import import_plugins

    module_name, _, class_name = spec.class_.partition(":")
    (module,) = import_plugins([module_name])
    cls = getattr(module, class_name, None) if not class_name.startswith("_") else None
    if cls is None:
        public = [n for n, v in vars(module).items() if inspect.isclass(v) and issubclass(v, keras.Model)]
        raise ModelBuildError(f"model.class: {module_name} has no class '{class_name}'"
                              f"{' (its keras.Model classes: ' + ', '.join(public) + ')' if public else ''}")
    if not (inspect.isclass(cls) and issubclass(cls, keras.Model)):
        raise ModelBuildError(f"model.class: {spec.class_} is not a subclass of keras.Model — a recipe builds only "
                              f"Keras objects from its plugins, and never calls anything else")
    return cls


def build_plugin(spec, input_shape, name: str, input_dtype, context):
    cls = plugin_class(spec)
    args = dict(spec.args)
    takes = inspect.signature(cls.__init__).parameters
    shape = tuple(spec.input_shape) if spec.input_shape is not None else input_shape
    if "input_shape" in takes and "input_shape" not in args and shape is not None:
        args["input_shape"] = tuple(shape)
    try:
        return cls(**args)
    except Exception as exc:  # noqa: BLE001 - the plugin's own errors, in the recipe's terms
        from dlrun.model.builder import first_line

        raise ModelBuildError(f"model ({spec.class_}): {first_line(exc)}") from exc


def compile_plugin(model, spec) -> None:
    from dlrun.model.builder import first_line, make_object

    kwargs = {"optimizer": make_object("optimizer", spec.optimizer)}
    if spec.generator_optimizer is not None:
        kwargs["generator_optimizer"] = make_object("optimizer", spec.generator_optimizer)
    if spec.loss is not None:
        kwargs["loss"] = make_object("loss", spec.loss)
    if spec.metrics:
        kwargs["metrics"] = [make_object("metric", m) for m in spec.metrics]
    try:
        model.compile(**kwargs)
    except Exception as exc:  # noqa: BLE001
        raise ModelBuildError(f"compile ({type(model).__name__}.compile with {', '.join(kwargs)}): "
                              f"{first_line(exc)}") from exc


def check_plugin(model, x, y) -> list[str]:
    """A few rows evaluated; a model without an inference path (a GAN that defines only
    ``train_step``) is left to its first training step, its metrics' names taken as they are."""
    from dlrun.data.dataset import rows
    from dlrun.model.builder import first_line

    try:
        return list(model.test_on_batch(rows(x, slice(0, 2)), rows(y, slice(0, 2)), return_dict=True))
    except NotImplementedError:
        return [metric.name for metric in model.metrics]
    except Exception as exc:  # noqa: BLE001
        raise ModelBuildError(f"the data does not fit the plugin model {type(model).__name__}: "
                              f"{first_line(exc)}") from exc


def check_generates(model) -> None:
    """``samples:`` needs a model that makes images from latent points."""
    if not isinstance(getattr(model, "latent_dim", None), int) or not callable(getattr(model, "generate", None)):
        raise ModelBuildError(f"samples: the plugin model {type(model).__name__} has no latent_dim and generate(z) "
                              f"(a method giving images of latent points), so it has no samples to draw: define "
                              f"them, or leave samples out")
