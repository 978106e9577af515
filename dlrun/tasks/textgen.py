"""Character-level text generation (the book's 8.1): vocabulary, sequences, sampling, generation.

Wiring: a recipe's character text source (``path``, ``maxlen: 60``, ``step: 3``, lowercase as the
book) builds :meth:`CharVocabulary.from_text` on the training text and saves ``to_json()`` in the
job directory (``dlrun generate`` needs it beside the model); :func:`char_sequences` gives the
training rows, fed as ``sequences.stream(batch_size, seed)`` — a
:class:`dlrun.data.streams.BatchStream`, so batches are one-hot encoded one at a time (the book's
whole one-hot tensor for Nietzsche, 200,278 × 60 × 57, would take 2.7 GB as float32) and resume
mid-run like other streams — with ``steps_per_epoch=stream.batches_per_pass``. The model is the
book's ``LSTM(128)`` + ``Dense(len(vocabulary), softmax)`` on inputs ``(maxlen, len(vocabulary))``.
:func:`text_sampler` is the callback that writes samples at the book's temperatures every K
epochs into the run (``samples.txt``; its ``samples`` list holds them for MLflow).
``dlrun generate RUN --temperature 0.5 --length 400 --seed-text "..."`` loads the run's model
and vocabulary and calls :func:`generate`; :func:`word_fraction` measures the output against the
corpus.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from dlrun.errors import UsageError

BOOK_TEMPERATURES = (0.2, 0.5, 1.0, 1.2)
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")  # letters, with inner apostrophes (don't, nietzsche's)


@dataclass(frozen=True)
class CharVocabulary:
    """The sorted distinct characters of a text; a character's code is its position."""

    chars: tuple[str, ...]
    _index: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_index", {char: i for i, char in enumerate(self.chars)})

    @classmethod
    def from_text(cls, text: str) -> "CharVocabulary":
        return cls(tuple(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """Codes of ``text`` (int32); a character outside the vocabulary is an error naming it."""
        try:
            return np.fromiter((self._index[char] for char in text), dtype="int32", count=len(text))
        except KeyError:
            unknown = sorted({char for char in text if char not in self._index})
            raise UsageError(f"text has characters the model never saw: {''.join(unknown)!r} — use only "
                             f"these {len(self)}: {''.join(self.chars)!r}") from None

    def decode(self, codes: Iterable[int]) -> str:
        return "".join(self.chars[int(code)] for code in codes)

    def one_hot(self, text: str) -> np.ndarray:
        """``(len(text), len(self))`` float32, one 1 per row (the book's vectorization)."""
        return np.eye(len(self), dtype="float32")[self.encode(text)]

    def adapt(self, text: str) -> str:
        """``text`` lowercased when that is what makes it fit a lowercase vocabulary (the book's)."""
        if not any(char.isupper() for char in self.chars) and all(
                char in self._index for char in text.lower()):
            return text.lower()
        return text

    def to_json(self) -> str:
        return json.dumps({"chars": list(self.chars)}, ensure_ascii=False)

    @classmethod
    def from_json(cls, data: str) -> "CharVocabulary":
        return cls(tuple(json.loads(data)["chars"]))


@dataclass(frozen=True, eq=False)
class CharSequences:
    """The book's semi-redundant sentences of ``maxlen`` characters every ``step`` characters
    and the character after each, held as the encoded text and start positions only.

    Row ``i`` is the sentence ``text[s : s + maxlen]`` and its next character ``text[s + maxlen]``
    with ``s = starts[i]``, as the book's ``range(0, len(text) - maxlen, step)``.
    """

    codes: np.ndarray
    vocabulary_size: int
    maxlen: int
    step: int

    @property
    def starts(self) -> np.ndarray:
        return np.arange(0, len(self.codes) - self.maxlen, self.step)

    @property
    def rows(self) -> int:
        return len(self.starts)

    def arrays(self, rows: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One-hot ``(x, y)`` of some rows as NumPy (all rows: only for small texts)."""
        starts = self.starts if rows is None else self.starts[np.asarray(rows)]
        eye = np.eye(self.vocabulary_size, dtype="float32")
        return eye[self.codes[starts[:, None] + np.arange(self.maxlen)]], eye[self.codes[starts + self.maxlen]]

    def gather(self, rows):
        """One-hot ``(x, y)`` tensors of the rows numbered by the tensor ``rows`` (a batch)."""
        import tensorflow as tf

        starts = tf.gather(tf.constant(self.starts, dtype="int64"), rows)
        codes = tf.constant(self.codes)
        x = tf.gather(codes, starts[:, None] + tf.range(self.maxlen, dtype="int64"))
        y = tf.gather(codes, starts + self.maxlen)
        return tf.one_hot(x, self.vocabulary_size), tf.one_hot(y, self.vocabulary_size)

    def stream(self, batch_size: int = 128, seed: int | None = 0):
        """Endless shuffled batches (pass ``p`` in the order of ``seed`` and ``p``); one pass is
        ``stream.batches_per_pass`` steps. ``seed`` None keeps text order."""
        from dlrun.data.streams import BatchStream

        return BatchStream(self.rows, batch_size, seed, self.gather)


def char_sequences(text: str, vocabulary: CharVocabulary, maxlen: int = 60, step: int = 3) -> CharSequences:
    """Rows for training on ``text`` (the book: ``maxlen=60``, ``step=3``)."""
    if maxlen < 1 or step < 1:
        raise UsageError(f"text sequences: maxlen and step must be ≥ 1, not {maxlen} and {step}")
    if len(text) <= maxlen:
        raise UsageError(f"text sequences: the text has {len(text)} characters, not more than maxlen={maxlen}")
    return CharSequences(vocabulary.encode(text), len(vocabulary), maxlen, step)


def sample(preds, temperature: float = 1.0, rng: np.random.Generator | None = None) -> int:
    """A character code drawn from ``preds`` reweighted by ``temperature`` (Listing 8.6).

    Low temperatures sharpen the distribution towards its most likely code (0: always it),
    high ones flatten it.
    """
    preds = np.asarray(preds, dtype="float64")
    if temperature < 0:
        raise UsageError(f"temperature must be ≥ 0, not {temperature}")
    if temperature == 0:
        return int(np.argmax(preds))
    with np.errstate(divide="ignore"):
        logits = np.log(preds) / temperature
    weights = np.exp(logits - logits.max())  # the max subtracted: no overflow at low temperatures
    rng = rng if rng is not None else np.random.default_rng()
    return int(rng.choice(len(weights), p=weights / weights.sum()))


def generate(model, vocabulary: CharVocabulary, seed_text: str, length: int = 400, temperature: float = 0.5,
             rng: np.random.Generator | None = None) -> str:
    """``length`` new characters after ``seed_text``, one at a time from the model's predictions.

    The model sees the last ``maxlen`` characters (its input length); a shorter seed is padded
    on the left with all-zero rows. A seed in capitals meets a lowercase vocabulary lowercased.
    """
    return generate_many(model, vocabulary, seed_text, length, [temperature], rng)[0]


def generate_many(model, vocabulary: CharVocabulary, seed_text: str, length: int,
                  temperatures: Sequence[float], rng: np.random.Generator | None = None) -> list[str]:
    """:func:`generate` at several temperatures at once (one batch row each: one model call per character)."""
    import tensorflow as tf

    rng = rng if rng is not None else np.random.default_rng()
    maxlen = model.inputs[0].shape[1] or max(len(seed_text), 1)
    codes = vocabulary.encode(vocabulary.adapt(seed_text))[-maxlen:]
    window = np.full((len(temperatures), maxlen), -1, dtype="int64")  # -1: padding, an all-zero row
    if len(codes):
        window[:, -len(codes):] = codes
    predict = tf.function(lambda x: model(x, training=False))
    eye = np.vstack([np.zeros((1, len(vocabulary)), dtype="float32"), np.eye(len(vocabulary), dtype="float32")])
    generated = [[] for _ in temperatures]
    for _ in range(length):
        preds = predict(tf.constant(eye[window + 1])).numpy()
        for row, temperature in enumerate(temperatures):
            generated[row].append(sample(preds[row], temperature, rng))
        window = np.concatenate([window[:, 1:], np.array([[g[-1]] for g in generated])], axis=1)
    return [vocabulary.decode(codes) for codes in generated]


def corpus_words(corpus: str) -> frozenset[str]:
    """The distinct lowercase words of a text."""
    return frozenset(word.lower() for word in _WORD.findall(corpus))


def word_fraction(generated: str, corpus: str | frozenset[str], min_letters: int = 2) -> float:
    """The share of whole words of ``generated`` that occur in ``corpus`` (a text or
    :func:`corpus_words`); NaN when it holds no whole word.

    A word touching the start or the end of ``generated`` is left out: it may be cut (the first
    often continues the seed's last word, the last stops at ``length``). So are words shorter
    than ``min_letters``: single letters are in any corpus (the "e" of "e.g."), and a model that
    only says "e e e" would otherwise score 1.0.
    """
    words = corpus if isinstance(corpus, frozenset) else corpus_words(corpus)
    whole = [m.group().lower() for m in _WORD.finditer(generated)
             if m.start() > 0 and m.end() < len(generated) and len(m.group()) >= min_letters]
    return sum(word in words for word in whole) / len(whole) if whole else float("nan")


def text_sampler(vocabulary: CharVocabulary, path, *, seed_text: str | None = None, text: str | None = None,
                 every: int = 1, length: int = 400, temperatures: Sequence[float] = BOOK_TEMPERATURES,
                 corpus: str | frozenset[str] | None = None, seed: int = 0,
                 log: Callable[[dict], None] | None = None):
    """A Keras callback that, every ``every`` epochs, generates ``length`` characters at each of
    ``temperatures`` and appends them to the text file ``path`` (the book's loop after ``fit``).

    The seed is ``seed_text``, or else a random window of the model's ``maxlen`` characters of
    ``text`` each time (the book's). With ``corpus`` each sample also gets its
    :func:`word_fraction`. Every sample — ``{"epoch", "temperature", "seed", "text",
    "word_fraction"}`` — is kept in the callback's ``samples`` list and passed to ``log``.
    """
    import keras

    if seed_text is None and not text:
        raise UsageError("text sampler: give a seed text, or the text to take random seeds from")
    if every < 1:
        raise UsageError(f"text sampler: every must be ≥ 1 epoch, not {every}")
    words = None if corpus is None else corpus if isinstance(corpus, frozenset) else corpus_words(corpus)
    rng = np.random.default_rng(seed)
    path = Path(path)

    class TextSampler(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.samples: list[dict] = []

        def on_epoch_end(self, epoch, logs=None):
            if (epoch + 1) % every:
                return
            maxlen = self.model.inputs[0].shape[1] or 40
            if seed_text is not None:
                start_text = seed_text
            else:
                start = int(rng.integers(0, max(1, len(text) - maxlen)))
                start_text = text[start:start + maxlen]
            outputs = generate_many(self.model, vocabulary, start_text, length, temperatures, rng)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as out:
                out.write(f"=== epoch {epoch + 1} · seed: {start_text!r}\n")
                for temperature, generated in zip(temperatures, outputs):
                    entry = {"epoch": epoch + 1, "temperature": temperature, "seed": start_text,
                             "text": generated,
                             "word_fraction": None if words is None else word_fraction(generated, words)}
                    fraction = "" if words is None else f" · words in corpus: {entry['word_fraction']:.2f}"
                    out.write(f"--- temperature {temperature}{fraction}\n{start_text}{generated}\n")
                    self.samples.append(entry)
                    if log:
                        log(entry)

    return TextSampler()
