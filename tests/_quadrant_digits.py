"""Digits pasted into one quadrant of a blank canvas: a convnet whose evidence has a known place.

Used by tests/test_tasks_explain.py and benchmarks/grad_cam_quadrant.py to check that Grad-CAM
points at the digit. The digits are scikit-learn's real 8×8 handwritten digits (1,797, installed
with scikit-learn), enlarged to 16×16 and pasted at a random offset inside one random quadrant of a
40×40 black canvas; the class is the digit, so only the pasted quadrant holds evidence.
"""

from __future__ import annotations

import numpy as np

CANVAS = 40
QUADRANT = CANVAS // 2
DIGIT = 16


def quadrant_digits(indices, seed: int = 0, quadrants=None):
    """Canvases for the digits at ``indices``: ``(images (n, 40, 40, 1) in 0–255, labels, quadrants)``.

    Quadrants (random unless given) are numbered 0 top-left, 1 top-right, 2 bottom-left,
    3 bottom-right.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    indices = np.asarray(indices)
    images = np.zeros((len(indices), CANVAS, CANVAS, 1), dtype="float32")
    quadrants = rng.integers(0, 4, len(indices)) if quadrants is None else np.asarray(quadrants)
    for i, (index, quadrant) in enumerate(zip(indices, quadrants)):
        digit = np.kron(digits.images[index], np.ones((2, 2))) * (255.0 / 16.0)  # 8×8 (0–16) → 16×16 pixels
        top = (quadrant // 2) * QUADRANT + rng.integers(0, QUADRANT - DIGIT + 1)
        left = (quadrant % 2) * QUADRANT + rng.integers(0, QUADRANT - DIGIT + 1)
        images[i, top:top + DIGIT, left:left + DIGIT, 0] = digit
    return images, digits.target[indices], quadrants


def two_digit_canvases(indices, seed: int = 0):
    """Two different digits per canvas, in two different quadrants: the digits at ``indices``
    with, for each, the next one of ``indices`` that has another label. Returns
    ``(images, (labels_a, quadrants_a), (labels_b, quadrants_b))``."""
    from sklearn.datasets import load_digits

    targets = load_digits().target
    indices = np.asarray(indices)
    partners = np.array([next(j for j in np.roll(indices, -k - 1) if targets[j] != targets[i])
                         for k, i in enumerate(indices)])
    rng = np.random.default_rng(seed)
    quadrants_a = rng.integers(0, 4, len(indices))
    quadrants_b = (quadrants_a + rng.integers(1, 4, len(indices))) % 4
    images_a, labels_a, _ = quadrant_digits(indices, seed, quadrants_a)
    images_b, labels_b, _ = quadrant_digits(partners, seed + 1, quadrants_b)
    return np.maximum(images_a, images_b), (labels_a, quadrants_a), (labels_b, quadrants_b)


def split(n_train: int, seed: int = 0):
    """Disjoint digit indices: ``n_train`` for training, the rest of the 1,797 for evaluation."""
    order = np.random.default_rng(seed).permutation(1797)
    return order[:n_train], order[n_train:]


def trained_convnet(train_indices, epochs: int = 10, seed: int = 0, copies: int = 2, width: int = 8,
                    learning_rate: float = 3e-3):
    """A small convnet (three conv blocks, global average pooling, softmax) trained on canvases;
    each training digit is pasted ``copies`` times at random places. ``epochs=0``: untrained."""
    import keras

    keras.utils.set_random_seed(seed)
    images, labels, _ = quadrant_digits(np.tile(train_indices, copies), seed=seed)
    layers = keras.layers
    model = keras.Sequential([
        keras.Input((CANVAS, CANVAS, 1)),
        layers.Rescaling(1 / 255.0),
        layers.Conv2D(width, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(2 * width, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(),
        layers.Conv2D(4 * width, 3, padding="same", activation="relu", name="last_conv"),
        layers.GlobalAveragePooling2D(),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    if epochs:
        model.fit(images, labels, epochs=epochs, batch_size=64, verbose=0)
    return model


def quadrant_mass(heatmap: np.ndarray, quadrant: int) -> float:
    """The share of a canvas-sized heatmap's mass inside ``quadrant`` (0.25 for a flat map)."""
    half = heatmap.shape[0] // 2
    top, left = (quadrant // 2) * half, (quadrant % 2) * half
    total = float(heatmap.sum())
    return float(heatmap[top:top + half, left:left + half].sum()) / total if total > 0 else 0.0


def one_digit_shares(model, images, quadrants) -> np.ndarray:
    """Grad-CAM for the predicted class: each heatmap's share in its digit's quadrant."""
    from dlrun.tasks.explain import grad_cam_heatmaps

    cams = grad_cam_heatmaps(model, images)
    return np.array([quadrant_mass(cam.upsampled((CANVAS, CANVAS)), q) for cam, q in zip(cams, quadrants)])


def two_digit_shares(model, images, digits_a, digits_b) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM for each of the two digits' classes (``digits_*`` = (labels, quadrants), as
    :func:`two_digit_canvases` returns them): the share of each heatmap in the asked digit's own
    quadrant, and in the other digit's."""
    from dlrun.tasks.explain import grad_cam_heatmaps

    own, other = [], []
    for (labels, mine), (_, theirs) in ((digits_a, digits_b), (digits_b, digits_a)):
        for cam, q_mine, q_theirs in zip(grad_cam_heatmaps(model, images, class_indices=labels), mine, theirs):
            heat = cam.upsampled((CANVAS, CANVAS))
            own.append(quadrant_mass(heat, q_mine))
            other.append(quadrant_mass(heat, q_theirs))
    return np.array(own), np.array(other)
