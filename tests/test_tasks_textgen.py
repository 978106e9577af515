"""Character-level text generation (dlrun/tasks/textgen.py, the book's 8.1)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dlrun.errors import UsageError
from dlrun.tasks.textgen import (BOOK_TEMPERATURES, CharVocabulary, char_sequences, corpus_words, generate,
                                 sample, text_sampler, word_fraction)

TEXT = ("supposing that truth is a woman--what then? is there not ground for suspecting that all "
        "philosophers, in so far as they have been dogmatists, have failed to understand women")


@pytest.fixture
def nietzsche(shared_datasets) -> str:
    path = shared_datasets / "nietzsche" / "nietzsche.txt"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path.read_text(encoding="utf-8").lower()


def test_vocabulary_round_trips_text_codes_one_hot_and_json():
    vocabulary = CharVocabulary.from_text(TEXT)
    assert list(vocabulary.chars) == sorted(set(TEXT)) and len(vocabulary) == len(set(TEXT))
    codes = vocabulary.encode(TEXT)
    assert codes.dtype == np.int32 and vocabulary.decode(codes) == TEXT
    one_hot = vocabulary.one_hot("truth")
    assert one_hot.shape == (5, len(vocabulary)) and (one_hot.sum(axis=1) == 1).all()
    assert vocabulary.decode(one_hot.argmax(axis=1)) == "truth"
    assert CharVocabulary.from_json(vocabulary.to_json()) == vocabulary
    with pytest.raises(UsageError, match="never saw: 'Qz'"):
        vocabulary.encode("Quiz")
    assert vocabulary.adapt("Truth IS") == "truth is"  # a lowercase vocabulary takes a capitalized seed


def test_sequences_are_the_books_sentences_and_next_characters():
    vocabulary = CharVocabulary.from_text(TEXT)
    sequences = char_sequences(TEXT, vocabulary, maxlen=10, step=3)
    starts = range(0, len(TEXT) - 10, 3)
    assert sequences.rows == len(starts)
    x, y = sequences.arrays()
    assert x.shape == (len(starts), 10, len(vocabulary)) and y.shape == (len(starts), len(vocabulary))
    for row, start in enumerate(starts):
        assert vocabulary.decode(x[row].argmax(axis=1)) == TEXT[start:start + 10]
        assert vocabulary.chars[y[row].argmax()] == TEXT[start + 10]
    gathered = sequences.gather(np.array([4, 0, 7]))
    np.testing.assert_array_equal(gathered[0].numpy(), x[[4, 0, 7]])
    np.testing.assert_array_equal(gathered[1].numpy(), y[[4, 0, 7]])
    with pytest.raises(UsageError, match="not more than maxlen"):
        char_sequences("short", vocabulary, maxlen=10)


def test_nietzsche_counts_match_the_book(nietzsche):
    vocabulary = CharVocabulary.from_text(nietzsche)
    sequences = char_sequences(nietzsche, vocabulary, maxlen=60, step=3)
    assert (len(nietzsche), len(vocabulary), sequences.rows) == (600893, 57, 200278)
    stream = sequences.stream(batch_size=128, seed=0)
    assert stream.batches_per_pass == math.ceil(200278 / 128)
    x, y = next(iter(stream.dataset()))  # one batch is one-hot encoded, never the whole text
    assert x.shape == (128, 60, 57) and y.shape == (128, 57)


def test_sample_follows_the_temperature():
    preds = np.array([0.5, 0.3, 0.15, 0.05])
    rng = np.random.default_rng(0)
    draws = {t: np.bincount([sample(preds, t, rng) for _ in range(2000)], minlength=4) / 2000
             for t in (0.2, 1.0, 1.5)}
    assert draws[0.2][0] > 0.9  # low temperature: the most likely character nearly always
    np.testing.assert_allclose(draws[1.0], preds, atol=0.04)  # 1: the model's own distribution
    assert draws[1.5][3] > draws[1.0][3] and draws[1.5][0] < draws[1.0][0]  # high: flatter
    assert sample(preds, 0) == 0
    assert sample(np.array([1.0, 0.0, 0.0]), 0.01, rng) == 0  # zeros and tiny temperatures: no NaN
    with pytest.raises(UsageError):
        sample(preds, -1)


def _lstm(maxlen: int, vocabulary_size: int):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((maxlen, vocabulary_size)), keras.layers.LSTM(16),
                              keras.layers.Dense(vocabulary_size, activation="softmax")])
    model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=0.01), loss="categorical_crossentropy")
    return model


def test_generate_gives_length_characters_of_the_vocabulary():
    vocabulary = CharVocabulary.from_text(TEXT)
    model = _lstm(12, len(vocabulary))
    for seed_text in ("Truth", "is there not ground for suspecting", ""):
        text = generate(model, vocabulary, seed_text, length=30, temperature=1.0, rng=np.random.default_rng(1))
        assert len(text) == 30 and set(text) <= set(vocabulary.chars)
    rng = lambda: np.random.default_rng(5)  # noqa: E731
    assert generate(model, vocabulary, "truth", 20, 0.5, rng()) == generate(model, vocabulary, "truth", 20, 0.5, rng())


def test_word_fraction_counts_whole_words_found_in_the_corpus():
    words = corpus_words(TEXT)
    assert word_fraction("xx truth woman blorf women's zz", words) == pytest.approx(2 / 4)  # edges cut
    assert word_fraction("e e e e e", TEXT + " e.g.") != 1.0  # single letters don't count
    assert math.isnan(word_fraction("truth", words))


def test_text_sampler_writes_every_k_epochs(tmp_path):
    vocabulary = CharVocabulary.from_text(TEXT)
    sequences = char_sequences(TEXT, vocabulary, maxlen=12, step=2)
    model = _lstm(12, len(vocabulary))
    logged = []
    sampler = text_sampler(vocabulary, tmp_path / "samples.txt", text=TEXT, every=2, length=25,
                           corpus=TEXT, log=logged.append)
    x, y = sequences.arrays()
    model.fit(x, y, epochs=4, batch_size=32, verbose=0, callbacks=[sampler])
    assert [(s["epoch"], s["temperature"]) for s in sampler.samples] == \
        [(e, t) for e in (2, 4) for t in BOOK_TEMPERATURES]
    assert logged == sampler.samples
    assert all(len(s["text"]) == 25 and len(s["seed"]) == 12 and s["seed"] in TEXT for s in sampler.samples)
    written = (tmp_path / "samples.txt").read_text(encoding="utf-8")
    assert written.count("=== epoch") == 2 and written.count("--- temperature") == 8
    assert all(s["seed"] + s["text"] in written for s in sampler.samples)


def test_an_lstm_learns_from_a_few_kb_of_nietzsche(nietzsche, tmp_path):
    text = nietzsche[:8000]
    vocabulary = CharVocabulary.from_text(text)
    sequences = char_sequences(text, vocabulary, maxlen=40, step=3)
    model = _lstm(40, len(vocabulary))
    stream = sequences.stream(batch_size=64, seed=0)
    sampler = text_sampler(vocabulary, tmp_path / "samples.txt", seed_text=text[:40], length=60,
                           corpus=nietzsche)
    history = model.fit(stream.dataset(), steps_per_epoch=stream.batches_per_pass, epochs=2, verbose=0,
                        shuffle=False, callbacks=[sampler])  # the stream shuffles
    losses = history.history["loss"]
    assert losses[-1] < losses[0] < math.log(len(vocabulary)) + 0.5
    assert len(sampler.samples) == 8 and (tmp_path / "samples.txt").is_file()
    assert all(set(s["text"]) <= set(vocabulary.chars) for s in sampler.samples)
