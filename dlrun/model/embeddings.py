"""The ``PretrainedEmbedding`` recipe layer: an Embedding initialized from word vectors.

The book's 6.1.3: parse a GloVe file (``word v1 … vd`` per line, ``.txt`` or ``.txt.gz``),
build a matrix whose row ``i`` is the vector of the vectorizer's word ``i``, zero for words
the file lacks (and for padding and ``[UNK]``), and freeze it. The vocabulary comes from the
fitted ``text_vectorization`` step (:class:`~dlrun.model.builder.BuildContext`), so a
K-fold run builds a matrix for each fold's own vocabulary.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from dlrun.data.files import resolve_path
from dlrun.errors import ModelBuildError

RESERVED = ("", "[UNK]")  # TextVectorization's padding and out-of-vocabulary tokens
GLOVE_HINT = ("GloVe vectors: https://nlp.stanford.edu/projects/glove/ (glove.6B.zip); "
              "a relative path resolves against the recipe's folder")


def make_pretrained_embedding(args: dict, context, where: str):
    import keras

    path_arg = args.get("path")
    trainable, mask_zero, name = args.get("trainable", False), args.get("mask_zero", False), args.get("name")
    if not isinstance(path_arg, str) or not path_arg:
        raise ModelBuildError(f"{where}: 'path' must name a word-vector file (.txt or .txt.gz)")
    for key, value in (("trainable", trainable), ("mask_zero", mask_zero)):
        if not isinstance(value, bool):
            raise ModelBuildError(f"{where}: '{key}' must be true or false, not {value!r}")
    if name is not None and not isinstance(name, str):
        raise ModelBuildError(f"{where}: 'name' must be a string")
    vocabulary = context.vocabulary
    if not vocabulary:
        raise ModelBuildError(
            f"{where}: needs a vocabulary to look words up: put a text_vectorization step with output_mode: int "
            f"in 'preprocessing' (the embedding's row i is the vector of that vocabulary's word i)")
    path = resolve_path(path_arg, context.base_dir).resolve()
    matrix, found = embedding_matrix(path, vocabulary, where)
    words = sum(1 for i, w in enumerate(vocabulary) if not _reserved(i, w))
    context.facts.update({"embedding_path": str(path), "embedding_dim": int(matrix.shape[1]),
                          "embedding_vocabulary": len(vocabulary), "embedding_found": found,
                          "embedding_missing": words - found})
    layer = keras.layers.Embedding(input_dim=matrix.shape[0], output_dim=matrix.shape[1], weights=matrix,
                                   mask_zero=mask_zero, name=name)
    layer.trainable = trainable  # frozen by default: the book's embedding_layer.trainable = False
    return layer


def _reserved(index: int, word: str) -> bool:
    return index < len(RESERVED) and word == RESERVED[index]


def embedding_matrix(path: Path, vocabulary: list[str], where: str) -> tuple[np.ndarray, int]:
    """``(matrix, found)``: row ``i`` holds the vector of ``vocabulary[i]``, zero when absent."""
    index = {word: i for i, word in enumerate(vocabulary) if not _reserved(i, word)}
    vectors, dim = read_vectors(path, set(index), where)
    matrix = np.zeros((len(vocabulary), dim), dtype=np.float32)
    for word, vector in vectors.items():
        matrix[index[word]] = vector
    if index and not vectors:
        raise ModelBuildError(f"{where}: none of the {len(index)} vocabulary words has a vector in {path}: is it "
                              f"a word-vector file for this language and standardization (lowercase)?")
    return matrix, len(vectors)


def read_vectors(path: Path, wanted: set[str], where: str) -> tuple[dict[str, np.ndarray], int]:
    """The float32 vectors of the ``wanted`` words (the first occurrence of each), and the
    file's vector size. Only wanted words are kept: a full GloVe file has 400,000."""
    vectors: dict[str, np.ndarray] = {}
    dim = None
    for number, line in _lines(path, where):
        parts = line.rstrip("\n\r").rstrip(" ").split(" ")
        if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
            continue  # a word2vec-style header "<words> <dimension>"
        if len(parts) < 2:
            if not line.strip():
                continue
            raise ModelBuildError(f"{where}: {path}:{number}: expected 'word v1 v2 …' (GloVe text format)")
        if dim is None:
            dim = len(parts) - 1
        if len(parts) - 1 < dim:
            raise ModelBuildError(f"{where}: {path}:{number}: {len(parts) - 1} values, the file's first vector "
                                  f"has {dim} (a truncated or malformed GloVe file?)")
        word = " ".join(parts[:-dim])  # a few GloVe words hold spaces; the vector is the last `dim` values
        if word not in wanted or word in vectors:
            continue
        try:
            vectors[word] = np.asarray(parts[-dim:], dtype=np.float32)
        except ValueError:
            raise ModelBuildError(f"{where}: {path}:{number}: the values of '{word}' are not all numbers "
                                  f"(GloVe text format: 'word v1 v2 …')") from None
    if dim is None:
        raise ModelBuildError(f"{where}: {path} holds no word vectors")
    return vectors, dim


def _lines(path: Path, where: str):
    if not path.is_file():
        raise ModelBuildError(f"{where}: no such word-vector file: {path}. Set its 'path' (e.g. --set "
                              f"'{_dotted(where)}.path=…/glove.6B.100d.txt'). {GLOVE_HINT}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            yield from enumerate(handle, start=1)
    except (OSError, UnicodeDecodeError, EOFError) as error:
        raise ModelBuildError(f"{where}: cannot read {path} as a UTF-8 GloVe text file "
                              f"(.txt or .txt.gz): {error}") from error


def _dotted(where: str) -> str:
    """``model.layers[0] (PretrainedEmbedding)`` → ``model.layers[0].PretrainedEmbedding``."""
    place, _, name = where.partition(" (")
    return f"{place}.{name.rstrip(')')}" if name else place
