"""Random data of the book's shapes for the graph-model recipes of chapter 7 (7.1.2–7.1.6).

The book trains these models on random arrays too (Listings 7.2 and 7.4 feed ``np.random``
data): they show wiring, not accuracy. Usage, from the project root:

    python recipes/data/make_graph_data.py            # every file, book sizes, into recipes/data/
    python recipes/data/make_graph_data.py qa_two_inputs --samples 100 --out /tmp/qa.npz

Each file holds named arrays; the recipe's ``data.x``/``data.y`` map them to the model's inputs
and outputs. Tests call :func:`write` with few samples and small images.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def qa_two_inputs(rng, n: int) -> dict:
    """7.1.2: a text and a question (word indices, length 100) → a one-hot answer of 500 words."""
    answers = rng.integers(0, 500, n)
    return {"text": rng.integers(1, 10000, (n, 100)), "question": rng.integers(1, 10000, (n, 100)),
            "answer": np.eye(500, dtype="float32")[answers]}


def three_outputs(rng, n: int) -> dict:
    """7.1.3: social-media posts (word indices, length 500) → age, income group (10, one-hot), gender."""
    return {"posts": rng.integers(1, 50000, (n, 500)), "age": rng.uniform(18, 80, (n, 1)).astype("float32"),
            "income": np.eye(10, dtype="float32")[rng.integers(0, 10, n)],
            "gender": rng.integers(0, 2, (n, 1)).astype("float32")}


def siamese_lstm(rng, n: int) -> dict:
    """7.1.5: two sentences as sequences of 128-d vectors (20 steps) → whether they match."""
    return {"left": rng.normal(size=(n, 20, 128)).astype("float32"),
            "right": rng.normal(size=(n, 20, 128)).astype("float32"),
            "same": rng.integers(0, 2, (n, 1)).astype("float32")}


def xception_siamese(rng, n: int, size: int = 250) -> dict:
    """7.1.6: two camera images (size×size×3) → whether they show the same thing."""
    return {"left": rng.uniform(0, 1, (n, size, size, 3)).astype("float32"),
            "right": rng.uniform(0, 1, (n, size, size, 3)).astype("float32"),
            "same": rng.integers(0, 2, (n, 1)).astype("float32")}


MAKERS = {"qa_two_inputs": qa_two_inputs, "three_outputs": three_outputs, "siamese_lstm": siamese_lstm,
          "xception_siamese": xception_siamese}
SAMPLES = {"qa_two_inputs": 1000, "three_outputs": 1000, "siamese_lstm": 1000, "xception_siamese": 64}


def write(name: str, path: Path, samples: int, seed: int = 0, **options) -> Path:
    """Write ``name``'s arrays for ``samples`` samples to ``path`` (an .npz)."""
    arrays = MAKERS[name](np.random.default_rng(seed), samples, **options)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", choices=[*MAKERS, []], help="default: all")
    parser.add_argument("--samples", type=int, help="default: 1000 (64 for xception_siamese)")
    parser.add_argument("--out", type=Path, help="the .npz (one name only); default recipes/data/<name>.npz")
    args = parser.parse_args()
    names = args.names or list(MAKERS)
    for name in names:
        out = args.out if args.out and len(names) == 1 else Path(__file__).parent / f"{name}.npz"
        print(write(name, out, args.samples or SAMPLES[name]))


if __name__ == "__main__":
    main()
