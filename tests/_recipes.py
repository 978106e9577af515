"""The small iris recipes several test files train or load: a hold-out split, standardize and
one-hot, one hidden Dense layer, categorical cross-entropy. Seconds to train on a CPU.
``resumable_iris_recipe`` is the one the resume tests interrupt: deterministic, with dropout
(random state) and early stopping (callback state), in batches of 2 (48 an epoch).

Import it the way tests import ``_mlflow_server``::

    sys.path.insert(0, str(Path(__file__).parent))
    from _recipes import iris_recipe, resumable_iris_recipe
"""

from __future__ import annotations

# Iris with a hold-out split (test and validation 20 %), standardized, labels one-hot.
_DATA = """\
data:
  source: embedded
  name: iris
{shuffle}  split:
    test: {fraction: 0.2}
    validation: {fraction: 0.2}
preprocessing:
  - {transform: standardize}
  - {transform: one_hot}
"""

_IRIS = """\
name: {name}
{data}model:
  layers:
    - Dense: {{units: {units}, activation: relu}}
    - Dense: {{units: 3, activation: softmax}}
compile:
  optimizer: {optimizer}
  loss: categorical_crossentropy
  metrics: [accuracy]
fit:
  epochs: {epochs}
  batch_size: 16
{extra}"""


def iris_recipe(
    name: str,
    *,
    epochs: int = 3,
    units: int = 16,
    optimizer: str = "{Adam: {learning_rate: 1e-2}}",
    shuffle: bool = False,
    extra: str = "",
) -> str:
    """The recipe's YAML text. ``units``: the hidden layer's; ``optimizer``: YAML text for
    ``compile.optimizer``; ``shuffle``: write ``data.shuffle: true``; ``extra``: YAML text
    appended as it is (whole top-level sections, e.g. ``"tracking:\\n  tags: {a: b}\\n"``)."""
    if extra and not extra.endswith("\n"):
        extra += "\n"
    return _IRIS.format(name=name, epochs=epochs, units=units, optimizer=optimizer, extra=extra,
                        data=_data(shuffle))


_RESUMABLE = """\
name: {name}
deterministic: true
plugins: [{plugins}]
{data}model:
  layers:
    - Dense: {{units: 16, activation: relu}}
    - Dropout: {{rate: 0.2}}
    - Dense: {{units: 3, activation: softmax}}
compile:
  optimizer: {{Adam: {{learning_rate: 1e-3}}}}
  loss: categorical_crossentropy
  metrics: [accuracy]
fit:
  epochs: {epochs}
  batch_size: 2
{fit}  callbacks:
    - EarlyStopping: {{monitor: val_loss, patience: 100, restore_best_weights: true}}
{callbacks}"""


def resumable_iris_recipe(name: str, *, epochs: int = 12, fit: str = "", callbacks: str = "",
                          plugins: str = "") -> str:
    """``fit``: more ``fit:`` keys as YAML lines (``"checkpoint_steps: 7"``); ``callbacks``: more
    callbacks, one YAML flow mapping a line; ``plugins``: the ``plugins:`` list's items."""
    return _RESUMABLE.format(name=name, epochs=epochs, plugins=plugins, fit=_lines(fit, "  "),
                             callbacks=_lines(callbacks, "    - "), data=_data(shuffle=True))


def _data(shuffle: bool) -> str:
    return _DATA.replace("{shuffle}", "  shuffle: true\n" if shuffle else "")


def _lines(text: str, prefix: str) -> str:
    return "".join(f"{prefix}{line}\n" for line in text.splitlines())
