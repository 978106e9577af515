"""``source: text_chars`` — a text file for a character-level language model (the book's 8.1).

The vocabulary is the sorted distinct characters of the training text (the book lowercases it
first); it is saved with the run (``preprocessing.json``: ``vocabulary``, ``maxlen``), which is
what ``dlrun generate`` reads. The rows are the book's sentences — ``maxlen`` characters every
``step`` characters, and the character after each — one-hot encoded batch by batch from a
seeded :class:`~dlrun.data.streams.BatchStream` (the whole one-hot tensor of Nietzsche would
take 2.7 GB), so a resumed run continues the stream exactly. ``validation: 0.05`` keeps the
text's last 5 % aside as validation sentences (characters it has and the training text lacks
are left out of it, and counted). With ``samples:`` the source adds the text sampler: after
every N epochs, text at each temperature from a seed, and its share of real words.
"""

from __future__ import annotations

from pathlib import Path

from dlrun.data.dataset import StreamedDataset
from dlrun.data.files import _existing_file
from dlrun.errors import DataError


def read_text(spec, base_dir: Path) -> tuple[str, Path]:
    path = _existing_file(spec.path, base_dir)
    try:
        text = path.read_text(encoding=spec.encoding)
    except UnicodeDecodeError as exc:
        raise DataError(f"data.path: {path} is not {spec.encoding} text (byte {exc.start}: {exc.reason}); set "
                        f"data.encoding") from None
    except LookupError:
        raise DataError(f"data.encoding: unknown text encoding '{spec.encoding}'") from None
    return (text.lower() if spec.lowercase else text), path


def load_text_chars(spec, base_dir: Path, *, seed: int, batch_size: int) -> StreamedDataset:
    from dlrun.tasks.textgen import CharVocabulary, char_sequences
    from dlrun.errors import UsageError

    text, path = read_text(spec, base_dir)
    cut = len(text) if spec.validation is None else int(len(text) * (1 - spec.validation))
    train_text, validation_text = text[:cut], text[cut:]
    vocabulary = CharVocabulary.from_text(train_text)  # the training part's characters only
    chars = set(vocabulary.chars)
    known = "".join(char for char in validation_text if char in chars)
    try:
        sequences = char_sequences(train_text, vocabulary, spec.maxlen, spec.step)
        held_out = char_sequences(known, vocabulary, spec.maxlen, spec.step) if spec.validation else None
    except UsageError as exc:
        raise DataError(f"data ({path.name}): {exc}") from None
    info = {"path": str(path), "characters": len(text), "vocabulary_size": len(vocabulary),
            "train_sequences": sequences.rows, "maxlen": spec.maxlen, "step": spec.step,
            "parts": {"train": [0, cut], "validation": [cut, len(text)] if held_out else None}}
    if held_out is not None:
        info.update(validation_sequences=held_out.rows, validation_characters_left_out=len(validation_text) - len(known))

    def validation():
        stream = held_out.stream(batch_size, None)
        return stream.dataset().take(stream.batches_per_pass)  # one pass, in text order

    def samplers(samples, folder: Path, on_file, log) -> list:
        from dlrun.tasks.textgen import corpus_words, text_sampler

        out = folder / "samples.txt"

        def logged(entry: dict) -> None:
            log(entry)
            if entry["temperature"] == samples.temperatures[-1]:  # the epoch's last sample is written
                on_file(out)

        return [text_sampler(vocabulary, out, seed_text=samples.seed_text, text=train_text, every=samples.every,
                             length=samples.length, temperatures=samples.temperatures,
                             corpus=corpus_words(text), seed=samples.seed, log=logged)]

    return StreamedDataset(
        name=path.stem,
        train=lambda: sequences.stream(batch_size, seed).dataset(),
        validation=validation if held_out is not None else None,
        info=info,
        fitted={"vocabulary": list(vocabulary.chars), "maxlen": spec.maxlen, "lowercase": spec.lowercase},
        train_stream=lambda: sequences.stream(batch_size, seed),
        samplers=samplers,
    )
