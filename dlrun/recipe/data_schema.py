"""The recipe's ``data`` section: one class per ``source``, and how its parts are split.

This module must never import tensorflow, keras or mlflow.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, Field, model_validator

from dlrun.recipe.schema_base import Strict



class HoldoutPart(Strict):
    """How one part (validation or test) is taken out of the training data.

    Exactly one of ``first``, ``last`` or ``fraction``; ``shuffle`` only applies to
    ``fraction`` (seeded by the recipe seed).
    """

    first: int | None = Field(strict=True, default=None, ge=1, lt=2**31)
    last: int | None = Field(strict=True, default=None, ge=1, lt=2**31)
    fraction: float | None = Field(default=None, gt=0, lt=1)
    shuffle: bool | None = None  # fraction only; default true

    @model_validator(mode="after")
    def _exactly_one(self) -> "HoldoutPart":
        given = [k for k in ("first", "last", "fraction") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'first', 'last' or 'fraction'")
        if self.shuffle is not None and self.fraction is None:
            raise ValueError("'shuffle' only applies to 'fraction' ('first'/'last' take rows in order)")
        if self.shuffle is None and self.fraction is not None:
            self.shuffle = True
        return self


class SplitSpec(Strict):
    """``test``: ``dataset`` (the source's own test split, default) or a part of the data;
    ``validation``: ``none`` or a part of what remains for training."""

    test: Literal["dataset", "none"] | HoldoutPart = "dataset"
    validation: Literal["none"] | HoldoutPart = "none"


class _DataBase(Strict):
    split: SplitSpec = Field(default_factory=SplitSpec)
    shuffle: bool = Field(
        default=False,
        description="shuffle the training rows once at load (seeded), before 'limit' and the splits; "
        "for sources stored in class order (iris, wine) whose first/last rows are one class",
    )
    limit: int | None = Field(strict=True, 
        default=None, ge=1, description="use only the first N training samples (before a test part is taken)"
    )
    keep_labels: list[int] | None = Field(
        default=None, min_length=1,
        description="keep only the rows whose label is one of these, train and test (8.5's GAN: the frogs, "
                    "class 6 of CIFAR-10); applied first, before shuffle and limit",
    )


class EmbeddedData(_DataBase):
    """Real datasets shipped inside registry packages (no download)."""

    source: Literal["embedded"]
    name: Literal[
        "digits", "iris", "wine", "breast_cancer", "diabetes", "mnist_5k", "boston_housing"
    ]


def _finite_options(options: dict[str, Any]) -> dict[str, Any]:
    from dlrun.recipe.arguments import non_finite

    bad = non_finite(options)
    if bad is not None:
        raise ValueError(f"options must hold finite numbers (got {bad})")
    return options


class KerasData(_DataBase):
    """``keras.datasets.<name>.load_data(**options)`` through Keras' own cache."""

    source: Literal["keras"]
    name: Literal["mnist", "fashion_mnist", "imdb", "reuters", "boston_housing", "cifar10", "cifar100"]
    options: Annotated[dict[str, Any], AfterValidator(_finite_options)] = Field(default_factory=dict)


class NpzData(_DataBase):
    """A NumPy ``.npz`` file: feature and target arrays by key, optional test arrays."""

    source: Literal["npz"]
    path: str
    # A key, or a graph model's inputs/outputs mapped to keys: ``x: {text: x_text, question: x_q}``.
    x: str | dict[str, str] = "x"
    y: str | dict[str, str] = "y"
    x_test: str | dict[str, str] | None = None
    y_test: str | dict[str, str] | None = None


class CsvData(_DataBase):
    """A CSV file with a header: target column(s) and feature columns (default: all others)."""

    source: Literal["csv"]
    path: str
    # Column groups by a graph model's output/input name: ``target: {age: age, income: [i1, i2]}``.
    target: str | list[str] | dict[str, str | list[str]]
    features: list[str] | dict[str, list[str]] | None = None
    delimiter: str = ","


class TextDirectoryData(_DataBase):
    """Text files in one sub-folder per class (the aclImdb layout: ``train/neg``, ``train/pos``,
    ``test/…``), read into memory as strings; ``path`` is a folder or a ``.tar[.gz|.xz]`` archive."""

    source: Literal["text_directory"]
    path: str
    train: str = "train"
    test: str | None = "test"
    classes: list[str] | None = Field(default=None, min_length=2,
                                      description="class folders in label order; default: every sub-folder, sorted")
    encoding: str = "utf-8"


class PretrainedBase(Strict):
    """A ``keras.applications`` network without its classifier (VGG16, Xception, …)."""

    application: str
    weights: str | None = Field(default="imagenet", description="imagenet, a local .h5/.keras file, or null (random)")
    include_top: Literal[False] = False
    pooling: Literal["avg", "max"] | None = None


class ImageDirectoryData(Strict):
    """Images in one sub-folder per class under ``train/``, ``validation/``, ``test/``,
    streamed with tf.data (``image_dataset_from_directory``), batched by ``fit.batch_size``.
    ``features`` runs a frozen pretrained base over every image once and trains on the
    cached features (the book's fast feature extraction, 5.3.1)."""

    source: Literal["image_directory"]
    path: str
    train: str = "train"
    validation: str | None = "validation"
    test: str | None = "test"
    image_size: list[int] = Field(default_factory=lambda: [150, 150], min_length=2, max_length=2)
    color_mode: Literal["rgb", "grayscale", "rgba"] = "rgb"
    label_mode: Literal["binary", "categorical", "int"] = "binary"
    rescale: float | None = Field(default=None, description="multiply pixels by this, e.g. 0.00392156862745098 (1/255)")
    shuffle: bool = True
    features: PretrainedBase | None = None


class TextCharsData(Strict):
    """A text file for a character-level language model (8.1): the sorted distinct characters
    are the vocabulary (saved with the run), and the rows are the book's sentences of ``maxlen``
    characters every ``step`` characters with the character after each, one-hot encoded batch
    by batch. Targets only: no test part; ``validation`` keeps the text's last fraction aside."""

    source: Literal["text_chars"]
    path: str
    lowercase: bool = Field(default=True, description="the book lowercases the text")
    maxlen: int = Field(strict=True, default=60, ge=1, lt=2**20)
    step: int = Field(strict=True, default=3, ge=1, lt=2**20)
    validation: float | None = Field(default=None, gt=0, lt=1,
                                     description="the last fraction of the text as validation sentences")
    encoding: str = "utf-8"


class RowRange(Strict):
    """Rows ``[start, end)`` of a series: row numbers, or fractions of its length (0 ≤ f ≤ 1)."""

    start: int | float = 0
    end: int | float | None = None


class TimeseriesData(Strict):
    """A multivariate series in a CSV (the Jena layout: a date-time column, numeric columns),
    cut into chronological train/validation/test ranges and windowed as the book does (6.3):
    for row ``i`` the sample is rows ``i - lookback … i - 1`` every ``step`` rows, the target is
    ``target`` at row ``i + delay``; a part's windows and targets stay inside its range (row
    numbers count after ``missing: drop``). Normalized with the training range's statistics."""

    source: Literal["timeseries_csv"]
    path: str
    time_column: str | None = None
    columns: list[str] | None = Field(default=None, min_length=1, description="default: every numeric column")
    target: str
    lookback: int = Field(strict=True, ge=1, lt=2**31)
    step: int = Field(strict=True, default=1, ge=1, lt=2**31)
    delay: int = Field(strict=True, default=0, ge=0, lt=2**31)
    train: RowRange
    validation: RowRange | None = None
    test: RowRange | None = None
    normalize: bool = True
    reverse: bool = Field(default=False, description="feed each window latest-first (6.3.8)")
    shuffle: bool = True
    missing: Literal["error", "interpolate", "drop"] = "error"
    delimiter: str = ","
    sort: bool = Field(default=False, description="sort the rows by time_column first (stable); without it, rows "
                                                  "that go back in time are refused")

    @model_validator(mode="after")
    def _sort_needs_time(self) -> "TimeseriesData":
        if self.sort and self.time_column is None:
            raise ValueError("sort: true sorts the rows by time: it needs data.time_column")
        return self


DataSpec = Annotated[
    Union[EmbeddedData, KerasData, NpzData, CsvData, TextDirectoryData, ImageDirectoryData, TimeseriesData,
          TextCharsData],
    Field(discriminator="source"),
]
STREAMED_SOURCES = ("image_directory", "timeseries_csv", "text_chars")
