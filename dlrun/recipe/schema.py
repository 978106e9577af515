"""The recipe schema (pydantic 2).

Every model forbids unknown keys; sections that come in kinds are discriminated unions
(``data.source``, ``evaluation.protocol``). Keras objects (layers, optimizers, losses,
metrics, callbacks) are written the way Keras names them: a bare name, or a one-key
mapping ``{ClassName: {argument: value}}``; their names and argument names are checked
against the Keras catalog in :mod:`dlrun.recipe.catalog`, not here.

This module must never import tensorflow, keras or mlflow.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import (AfterValidator, BaseModel, ConfigDict, Discriminator, Field, PrivateAttr, Tag, model_serializer,
                      model_validator)

from dlrun.recipe.data_schema import (  # noqa: F401 - re-exported: the recipe schema in one place
    HoldoutPart,
    SplitSpec,
    EmbeddedData,
    KerasData,
    NpzData,
    CsvData,
    TextDirectoryData,
    PretrainedBase,
    ImageDirectoryData,
    RowRange,
    TimeseriesData,
    TextCharsData,
    DataSpec,
    STREAMED_SOURCES,
)
from dlrun.recipe.graph_check import loss_is_per_output
from dlrun.recipe.plugins import module_name
from dlrun.recipe.search_schema import SearchSpec
from dlrun.recipe.schema_base import Strict


# --------------------------------------------------------------------------- Keras objects


class KerasObject(BaseModel):
    """``name`` or ``{name: {args}}`` — a Keras class or alias with its arguments."""

    model_config = ConfigDict(extra="forbid")
    name: str
    args: dict[str, Any] = Field(default_factory=dict)
    # The recipe's ``plugins`` modules, set by Recipe validation: where the builder looks up a
    # name Keras does not know (dlrun.model.plugins). Not part of the recipe form.
    _plugins: tuple[str, ...] = PrivateAttr(default=())
    # The recipe's folder, set when it is loaded: file arguments (a plugin's ``*_path``) resolve there.
    _base_dir: Any = PrivateAttr(default=None)

    @property
    def plugins(self) -> tuple[str, ...]:
        return self._plugins

    @property
    def base_dir(self):
        return self._base_dir

    @model_validator(mode="before")
    @classmethod
    def _from_recipe_form(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value, "args": {}}
        if isinstance(value, dict):
            if len(value) != 1:
                raise ValueError(
                    "write a Keras object as a name or a one-key mapping {Name: {argument: value}}"
                )
            (name, args), = value.items()
            if args is None:
                args = {}
            if not isinstance(args, dict):
                raise ValueError(f"the arguments of {name} must be a mapping, not {type(args).__name__}")
            return {"name": name, "args": args}
        return value

    @model_serializer
    def _to_recipe_form(self) -> Any:
        return {self.name: dict(self.args)} if self.args else self.name


from dlrun.recipe.graph_schema import GraphModel, bind_keras_object  # noqa: E402 - needs KerasObject
from dlrun.recipe import kinds_schema  # noqa: E402 - needs KerasObject
from dlrun.recipe.kinds_schema import GanModel, PluginModel, SamplesSpec, VaeModel  # noqa: E402
from dlrun.recipe.task_schema import TaskSpec  # noqa: E402

bind_keras_object(KerasObject)
kinds_schema.bind_keras_object(KerasObject)


# --------------------------------------------------------------------------- preprocessing


class _TransformBase(Strict):
    apply_to: Literal["x", "y"] = "x"


class MultiHot(_TransformBase):
    """The book's ``vectorize_sequences``: integer sequences → 0/1 vectors of ``dimension``."""

    transform: Literal["multi_hot"]
    dimension: int = Field(strict=True, ge=1, lt=2**31)


class OneHot(_TransformBase):
    """Integer class labels → one-hot rows (``to_categorical``); classes counted on the train part."""

    transform: Literal["one_hot"]
    apply_to: Literal["x", "y"] = "y"
    num_classes: int | None = Field(strict=True, default=None, ge=2)


class Standardize(_TransformBase):
    """Subtract the training part's mean and divide by its standard deviation, per feature."""

    transform: Literal["standardize"]


class Rescale(_TransformBase):
    """``x * scale + offset`` as float32 (e.g. pixels ``scale: 0.00392156862745098``)."""

    transform: Literal["rescale"]
    scale: float = 1.0
    offset: float = 0.0


class Reshape(_TransformBase):
    """Reshape every sample (the batch axis is kept), e.g. ``shape: [784]``."""

    transform: Literal["reshape"]
    shape: list[int] = Field(min_length=1)


class PadSequences(_TransformBase):
    """``keras.utils.pad_sequences`` to ``maxlen``."""

    transform: Literal["pad_sequences"]
    maxlen: int = Field(strict=True, ge=1, lt=2**31)
    padding: Literal["pre", "post"] = "pre"
    truncating: Literal["pre", "post"] = "pre"
    value: float = 0.0


class TextVectorization(_TransformBase):
    """Keras ``TextVectorization`` adapted on the training part's strings only. ``int`` mode
    gives word indices (0 padding, 1 out-of-vocabulary) padded/cut to ``output_sequence_length``
    or, without it, one whole sequence per text for a ``pad_sequences`` step to follow."""

    transform: Literal["text_vectorization"]
    max_tokens: int | None = Field(strict=True, default=20000, ge=2, lt=2**31)
    output_mode: Literal["int", "multi_hot", "count", "tf_idf"] = "int"
    output_sequence_length: int | None = Field(strict=True, default=None, ge=1, lt=2**31)
    standardize: Literal["lower_and_strip_punctuation", "lower", "strip_punctuation"] | None = (
        "lower_and_strip_punctuation")
    split: Literal["whitespace", "character"] | None = "whitespace"
    ngrams: int | None = Field(strict=True, default=None, ge=1, le=5)

    @model_validator(mode="after")
    def _length_for_int_only(self) -> "TextVectorization":
        if self.output_sequence_length is not None and self.output_mode != "int":
            raise ValueError("output_sequence_length applies to output_mode: int only")
        return self


TransformSpec = Annotated[
    Union[MultiHot, OneHot, Standardize, Rescale, Reshape, PadSequences, TextVectorization],
    Field(discriminator="transform"),
]


# --------------------------------------------------------------------------- model, compile, fit


class SequentialModel(Strict):
    """A stack of Keras layers by class name; the input shape comes from the data unless given."""

    type: Literal["sequential"] = "sequential"
    input_shape: list[int | None] | None = None
    layers: list[KerasObject] = Field(min_length=1)


def _loss_form(value: Any) -> str:
    """One loss (``mse``, ``{Huber: {delta: 1}}``) or one per output (``{age: mse, price: {Huber:
    {delta: 1}}}``): :func:`dlrun.recipe.graph_check.loss_is_per_output` decides. Serializing,
    pydantic asks again with the validated value: a KerasObject, or a mapping of them."""
    if isinstance(value, dict) and value and all(isinstance(v, KerasObject) for v in value.values()):
        return "per_output"
    return "per_output" if loss_is_per_output(value) else "one"


class CompileSpec(Strict):
    """``loss``, ``loss_weights`` and ``metrics`` may be given per output of a graph model,
    keyed by output name (``loss: {age: mse, gender: binary_crossentropy}``). A ``gan`` trains
    its discriminator with ``optimizer`` and its generator with ``generator_optimizer``; the
    kinds with their own loss (``vae``, ``gan``) take no ``loss`` (dlrun.recipe.kinds_check)."""

    optimizer: KerasObject = Field(default_factory=lambda: KerasObject.model_validate("rmsprop"))
    loss: Annotated[Union[Annotated[KerasObject, Tag("one")], Annotated[dict[str, KerasObject], Tag("per_output")]],
                    Discriminator(_loss_form)] | None = Field(default=None, exclude_if=lambda v: v is None)
    generator_optimizer: KerasObject | None = Field(
        default=None, exclude_if=lambda v: v is None,
        description="gan: the generator's optimizer (default: one like optimizer); a plugin gets it as "
                    "generator_optimizer=")
    loss_weights: dict[str, float] | None = None
    metrics: list[KerasObject] | dict[str, list[KerasObject]] = Field(default_factory=list)

    # --- GPU servers: how the compiled step runs
    jit_compile: Literal["auto"] | Annotated[bool, Field(strict=True)] = Field(
        default="auto", description="XLA: auto lets Keras decide (off on the CPU, under several GPUs, and for "
                                    "layers XLA cannot compile); the value it chose is recorded")

    @property
    def loss_names(self) -> list[str]:
        """The loss name, or each output's (stratified K-fold asks whether they classify)."""
        if self.loss is None:
            return []
        return [self.loss.name] if isinstance(self.loss, KerasObject) else [v.name for v in self.loss.values()]


class FineTune(Strict):
    """A second training stage (the book's 5.3.2): unfreeze the nested model ``layer`` from
    its layer ``unfreeze_from`` on, recompile with ``optimizer`` (a small learning rate),
    train ``epochs`` more. Layers before ``unfreeze_from`` stay frozen."""

    layer: str
    unfreeze_from: str
    optimizer: KerasObject
    epochs: int = Field(strict=True, ge=1, lt=2**31)


class FitSpec(Strict):
    epochs: int = Field(strict=True, default=10, ge=1, lt=2**31)
    batch_size: int = Field(strict=True, default=32, ge=1, lt=2**31)
    shuffle: bool = True
    steps_per_epoch: int | None = Field(strict=True, default=None, ge=1, lt=2**31,
                                        description="streamed data only: batches per epoch (the data repeats)")
    validation_steps: int | None = Field(strict=True, default=None, ge=1, lt=2**31)
    callbacks: list[KerasObject] = Field(default_factory=list)
    fine_tune: FineTune | None = None
    checkpoint: bool = Field(default=True, description="save the training state for dlrun train --resume (see "
                                                        "checkpoint_every)")
    checkpoint_every: float = Field(
        default=30.0, ge=0, le=10**9,
        description="seconds: save the training state at the end of an epoch at most this often, and always at "
                    "the end of a training stage and where Ctrl-C/SIGTERM stops training; 0: after every epoch")
    keep_checkpoint: bool = Field(default=False, description="keep the last training state when the run finishes "
                                                             "(it is removed then: a finished run is not resumed)")
    checkpoint_steps: int | None = Field(
        strict=True, default=None, ge=1, lt=2**31,
        description="also save it every N training batches inside an epoch: --resume then continues mid-epoch, "
                    "skipping the batches already trained")

    # --- GPU servers: number format and step batching
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = Field(
        default="float32", description="mixed_float16 (NVIDIA GPUs, loss scaling on) or mixed_bfloat16 (recent "
                                       "GPUs, TPUs): compute in 16 bits, keep the weights and the outputs in float32")
    steps_per_execution: Literal["auto"] | Annotated[int, Field(strict=True, ge=1, lt=2**31)] = Field(
        default=1, description="training batches run in one call of the compiled step (batch callbacks see one "
                               "batch in N); auto: several for a small model, 1 otherwise")

    @model_validator(mode="after")
    def _steps_need_checkpoints(self) -> "FitSpec":
        if self.checkpoint_steps is not None and not self.checkpoint:
            raise ValueError("checkpoint_steps saves the training state inside an epoch: it needs checkpoint: true")
        return self

    @model_validator(mode="after")
    def _executions_fit_checkpoints(self) -> "FitSpec":
        spe = self.steps_per_execution
        if isinstance(spe, int) and spe > 1 and self.checkpoint_steps and self.checkpoint_steps % spe:
            lower = max(d for d in range(1, spe + 1) if self.checkpoint_steps % d == 0)
            raise ValueError(f"checkpoint_steps {self.checkpoint_steps} is not a multiple of steps_per_execution "
                             f"{spe}: Keras sees the batches {spe} at a time, so a save can only fall between two "
                             f"executions; use steps_per_execution {lower}, or checkpoint_steps "
                             f"{-(-self.checkpoint_steps // spe) * spe}")
        return self


# --------------------------------------------------------------------------- evaluation, tracking


class Holdout(Strict):
    """Train, validate on the validation part, then evaluate on the test split if any."""

    protocol: Literal["holdout"]


class KFold(Strict):
    """K-fold cross-validation over the training data (the test split stays aside).

    ``repeats`` > 1 is iterated K-fold with shuffling. ``refit`` trains a final model on
    all training data for the best averaged epoch and evaluates it on the test split
    (the book's Listing 3.31).
    """

    protocol: Literal["kfold"]
    k: int = Field(strict=True, default=5, ge=2, lt=2**31)
    shuffle: bool = True
    stratify: Literal["auto"] | bool = "auto"
    repeats: int = Field(strict=True, default=1, ge=1, lt=2**31)
    monitor: str = "val_loss"
    mode: Literal["auto", "min", "max"] = Field(
        default="auto", description="whether a lower or higher monitor is better; auto asks Keras' metric"
    )
    refit: bool = False

    @model_validator(mode="after")
    def _repeats_need_shuffle(self) -> "KFold":
        if self.repeats > 1 and not self.shuffle:
            raise ValueError("iterated K-fold (repeats > 1) reshuffles each time: set shuffle: true")
        return self


class Baseline(Strict):
    """No training: only the data source's common-sense baseline (a time series' last value,
    6.3.3) on the validation and test ranges. ``model`` and ``compile`` may be left out."""

    protocol: Literal["baseline"]


EvaluationSpec = Annotated[Union[Holdout, KFold, Baseline], Field(discriminator="protocol")]


# Tags dlrun and MLflow set themselves (the run directory, the recipe file, a parent run…):
# a recipe may not set or override them.
RESERVED_TAG_PREFIXES = ("dlrun.", "mlflow.")


def _not_reserved(key: str) -> str:
    if key.lower().startswith(RESERVED_TAG_PREFIXES):
        raise ValueError(f"tags starting with {' or '.join(RESERVED_TAG_PREFIXES)} are set by dlrun and MLflow "
                         f"themselves; choose another name")
    return key


# MLflow's own rule for tag keys (mlflow/utils/validation.py).
TagKey = Annotated[str, Field(pattern=r"^[\w.\- :/]+$", max_length=250), AfterValidator(_not_reserved)]


def _no_control_characters(text: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError("control characters (a NUL byte, a line break, a tab…) are not allowed in a name")
    return text


# Names that also name folders; the run directory makes them one safe path component.
PrintableName = Annotated[str, AfterValidator(_no_control_characters)]


class TrackingSpec(Strict):
    experiment: PrintableName | None = Field(default=None, max_length=250, description="default: the recipe name")
    run_name: PrintableName | None = Field(default=None, max_length=200)
    tags: dict[TagKey, str] = Field(default_factory=dict)
    log_model: bool = True


# --------------------------------------------------------------------------- the recipe


def _model_type(value: Any) -> Any:
    """``model.type``, ``sequential`` when left out."""
    return value.get("type", "sequential") if isinstance(value, dict) else getattr(value, "type", None)


_model_type.__name__ = "type"  # pydantic names the discriminator after the function in errors


# An importable module name (``my_pkg.layers``): dotted identifiers, never a file path.
PluginModule = Annotated[str, AfterValidator(module_name)]


class Recipe(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    description: str = ""
    seed: int = Field(strict=True, default=42, ge=0, lt=2**32)
    deterministic: bool = Field(default=False, description="op determinism and a per-epoch data order fixed by "
                                "(seed, epoch): a resumed run ends as an uninterrupted one would")
    plugins: list[PluginModule] = Field(
        default_factory=list,
        description="modules imported when the model is built (never by validate); only these may "
                    "define the custom layers, losses, metrics, callbacks… the recipe names",
    )
    task: TaskSpec | None = Field(default=None, exclude_if=lambda v: v is None,
                                  description="a task that is not fit (deep_dream, style_transfer, explain); "
                                              "default: train the model on the data")
    data: DataSpec | None = Field(default=None, exclude_if=lambda v: v is None)
    preprocessing: list[TransformSpec] = Field(default_factory=list)
    model: Annotated[Union[Annotated[SequentialModel, Tag("sequential")], Annotated[GraphModel, Tag("graph")],
                           Annotated[VaeModel, Tag("vae")], Annotated[GanModel, Tag("gan")],
                           Annotated[PluginModel, Tag("plugin")]],
                     Discriminator(_model_type)] | None = None
    compile: CompileSpec | None = None
    fit: FitSpec = Field(default_factory=FitSpec)
    evaluation: EvaluationSpec = Field(default_factory=lambda: Holdout(protocol="holdout"))
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    search: SearchSpec | None = Field(default=None, exclude_if=lambda v: v is None)  # dlrun tune; trials set it null
    samples: SamplesSpec | None = Field(default=None, exclude_if=lambda v: v is None,
                                        description="generated images or text written while training")

    @model_validator(mode="after")
    def _consistent(self) -> "Recipe":
        if self.task is not None:  # its network and images are its own (dlrun.recipe.kinds_check)
            return self
        if self.data is None:
            raise ValueError("missing required key 'data' (or a 'task' that needs none)")
        if self.evaluation.protocol != "baseline":
            missing = [k for k in ("model", "compile") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"missing required key {' and '.join(repr(k) for k in missing)} (every "
                                 f"evaluation.protocol but 'baseline' trains a model)")
        streamed = self.data.source in STREAMED_SOURCES
        if streamed and self.evaluation.protocol == "kfold":
            raise ValueError(f"data.source {self.data.source} streams its data from fixed train/validation/test "
                             f"parts; K-fold needs in-memory data: use evaluation.protocol: holdout")
        if streamed and self.preprocessing:
            raise ValueError(f"data.source {self.data.source} prepares its own batches; 'preprocessing' applies to "
                             f"in-memory sources only (use data.rescale, data.normalize or a preprocessing layer)")
        if not streamed and (self.fit.steps_per_epoch or self.fit.validation_steps):
            raise ValueError("fit.steps_per_epoch/validation_steps apply to streamed sources (image_directory, "
                             "timeseries_csv) only")
        if getattr(self.evaluation, "refit", False) and self.fit.fine_tune is not None:
            raise ValueError("evaluation.refit picks one epoch count from the fold curves; with fit.fine_tune the "
                             "best epoch may fall in either stage: refit by hand with the epochs of each stage")
        if self.evaluation.protocol == "baseline" and self.data.source != "timeseries_csv":
            raise ValueError("evaluation.protocol baseline needs data.source timeseries_csv (the last-value baseline)")
        return self

    # Where each value was written (a yaml_source.SourceMap), when the recipe was loaded from a
    # file: checks after validation (the preflight's) report their problems there.
    _source: Any = PrivateAttr(default=None)

    def attach_source(self, source: Any, base_dir: Any = None) -> None:
        """Remember where the recipe was written (``source``) and its folder (``base_dir``)."""
        self._source = source
        for obj in _keras_objects(self):
            obj._base_dir = base_dir

    def issue(self, path: tuple, message: str, at_key: bool = False):
        """A located :class:`~dlrun.errors.RecipeIssue` for ``path`` of this recipe."""
        from dlrun.errors import Location, RecipeIssue
        from dlrun.recipe.yaml_source import format_path

        where = self._source.locate(path, key=at_key) if self._source is not None else Location("<recipe>")
        return RecipeIssue(where, format_path(path), message)

    @model_validator(mode="after")
    def _share_plugins(self) -> "Recipe":
        if self.plugins:
            for obj in _keras_objects(self):
                obj._plugins = tuple(self.plugins)
        return self


def _keras_objects(node: Any):
    """Every KerasObject inside a validated model (layers, optimizer, loss, metrics, callbacks…)."""
    if isinstance(node, KerasObject):
        yield node
    elif isinstance(node, BaseModel):
        for name in type(node).model_fields:
            yield from _keras_objects(getattr(node, name))
    elif isinstance(node, (list, dict)):  # dicts: graph nodes, shared layers, per-output losses
        for item in (node.values() if isinstance(node, dict) else node):
            yield from _keras_objects(item)
