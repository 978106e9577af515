"""``dlrun generate RUN``: new text from a character-level run (8.1), or images from a generative one.

A ``text_chars`` run's model writes ``length`` characters after a seed at each temperature, with
the vocabulary the run saved (``preprocessing.json``) — the seed defaults to a random window of
the run's own text, as the book's; each text gets its share of whole words found in that text.
A ``vae``, ``gan`` or plugin run (a model with ``latent_dim`` and ``generate``) draws ``n``
images from latent points fixed by ``seed`` into one grid PNG. Nothing is trained again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from dlrun.errors import UsageError


@dataclass
class Generated:
    run_dir: str
    kind: str  # text | images
    texts: list[dict] = field(default_factory=list)  # temperature, seed, text, word_fraction
    image: str | None = None
    n: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def generate(ref: str, *, output_root: Path, tracking_uri: str | None = None, fold: int | None = None,
             temperatures: Sequence[float] = (0.5,), length: int = 400, seed_text: str | None = None,
             n: int = 16, output: Path | None = None, seed: int = 0, force: bool = False) -> Generated:
    from dlrun.inference.trained import open_trained
    from dlrun.tf_runtime import configure_runtime

    trained = open_trained(ref, Path(output_root), tracking_uri, fold=fold)
    configure_runtime(seed)  # TensorFlow imported quietly
    recipe = trained.recipe
    if recipe.data is not None and recipe.data.source == "text_chars":
        return _text(trained, temperatures, length, seed_text, seed)
    if hasattr(trained.model, "latent_dim") and callable(getattr(trained.model, "generate", None)):
        return _images(trained, n, output, seed, force)
    kind = recipe.model.type if recipe.model is not None else "none"
    raise UsageError(f"run {trained.job.path} has nothing to generate: dlrun generate takes a character-level run "
                     f"(data.source text_chars) or a generative model (model.type vae, gan, or a plugin with "
                     f"latent_dim and generate); this one is a {kind} model")


def _text(trained, temperatures, length: int, seed_text: str | None, seed: int) -> Generated:
    import numpy as np

    from dlrun.tasks.textgen import CharVocabulary, corpus_words, generate_many, word_fraction

    saved = trained.job.preprocessing() or {}
    if "vocabulary" not in saved:
        raise UsageError(f"{trained.job.path} has no vocabulary in preprocessing.json: the run did not finish its job")
    vocabulary = CharVocabulary(tuple(saved["vocabulary"]))
    if any(t < 0 for t in temperatures) or length < 1:
        raise UsageError("--temperature must be ≥ 0 and --length ≥ 1")
    rng = np.random.default_rng(seed)
    corpus = _corpus(trained)
    if seed_text is None:
        if corpus is None:
            raise UsageError(f"the run's text ({trained.run.data_info().get('path')}) cannot be read here to take a "
                             f"seed from: give --seed-text")
        maxlen = int(trained.model.inputs[0].shape[1] or saved.get("maxlen") or 60)
        start = int(rng.integers(0, max(1, len(corpus) - maxlen)))
        seed_text = corpus[start:start + maxlen]
    texts = generate_many(trained.model, vocabulary, seed_text, length, list(temperatures), rng)
    words = corpus_words(corpus) if corpus is not None else None
    return Generated(str(trained.job.path), "text", [
        {"temperature": t, "seed": seed_text, "text": text,
         "word_fraction": None if words is None else word_fraction(text, words)}
        for t, text in zip(temperatures, texts)])


def _corpus(trained) -> str | None:
    """The run's training text as the model saw it (lowercased if it was), or None if not here."""
    from dlrun.data.text_chars import read_text
    from dlrun.errors import DlrunError

    try:
        return read_text(trained.recipe.data, trained.run.base_dir)[0]
    except (DlrunError, OSError):  # moved or gone: a seed text must be given
        return None


def _images(trained, n: int, output: Path | None, seed: int, force: bool) -> Generated:
    from dlrun.model.kinds.samples import save_generated_grid

    if output is None:
        raise UsageError("give the PNG to write: -o grid.png")
    output = Path(output)
    if output.suffix.lower() != ".png":
        raise UsageError(f"-o {output}: the grid is written as PNG; name a .png file")
    if output.exists() and not force:
        raise UsageError(f"{output} exists: choose another name, or --force to replace it")
    if n < 1:
        raise UsageError("-n must be at least 1")
    save_generated_grid(trained.model, output, n=n, seed=seed)
    return Generated(str(trained.job.path), "images", image=str(output), n=n)
