"""Grad-CAM checked for correctness: does the heatmap point at the digit? (dlrun/tasks/explain.py)

A small convnet is trained here on scikit-learn's real handwritten digits pasted into one random
quadrant of a 40×40 blank canvas (tests/_quadrant_digits.py). On held-out digits it reports:

- one digit per canvas: the share of the heatmap's mass in the digit's quadrant (0.25 = no idea);
- two different digits per canvas, in two quadrants: for each digit's class, the mass in its own
  quadrant and in the other digit's, and how often its own quadrant gets more — the test that
  Grad-CAM follows the class asked for and not merely the ink;
- the same for the same convnet with untrained (random) weights, as the control.

    .venv/bin/python benchmarks/grad_cam_quadrant.py                  # 1,200 digits to train, 597 held out
    .venv/bin/python benchmarks/grad_cam_quadrant.py --train 1000 --epochs 15 --json /tmp/gradcam.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def measure(model, held_out, seed: int) -> dict:
    import numpy as np
    from _quadrant_digits import one_digit_shares, quadrant_digits, two_digit_canvases, two_digit_shares

    images, labels, quadrants = quadrant_digits(held_out, seed=seed)
    accuracy = float((model.predict(images, verbose=0).argmax(axis=1) == labels).mean())
    single = one_digit_shares(model, images, quadrants)
    own, other = two_digit_shares(model, *two_digit_canvases(held_out, seed=seed + 1))
    return {
        "images": len(held_out), "accuracy": accuracy,
        "one_digit": {"mean_share_in_quadrant": float(single.mean()), "median": float(np.median(single)),
                      "share_of_images_above_half": float((single > 0.5).mean()), "min": float(single.min())},
        "two_digits": {"heatmaps": len(own), "mean_share_own_quadrant": float(own.mean()),
                       "mean_share_other_digit_quadrant": float(other.mean()),
                       "own_quadrant_beats_other": float((own > other).mean())},
    }


def report(name: str, figures: dict) -> None:
    one, two = figures["one_digit"], figures["two_digits"]
    print(f"{name}: accuracy {figures['accuracy']:.3f} on {figures['images']} held-out canvases")
    print(f"  one digit:  heatmap mass in the digit's quadrant: mean {one['mean_share_in_quadrant']:.3f}, "
          f"median {one['median']:.3f}, min {one['min']:.3f}; images above 0.5: {one['share_of_images_above_half']:.1%}")
    print(f"  two digits: mass in the asked class's quadrant {two['mean_share_own_quadrant']:.3f} vs the other "
          f"digit's {two['mean_share_other_digit_quadrant']:.3f}; own quadrant higher in "
          f"{two['own_quadrant_beats_other']:.1%} of {two['heatmaps']} heatmaps")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1200, help="digits to train on (of 1,797); the rest are held out")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args()

    from _quadrant_digits import split, trained_convnet

    train, held_out = split(args.train, seed=args.seed)
    began = time.perf_counter()
    model = trained_convnet(train, epochs=args.epochs, seed=args.seed)
    trained_s = time.perf_counter() - began
    control = trained_convnet(train, epochs=0, seed=args.seed)  # same architecture, random weights
    results = {"trained": measure(model, held_out, args.seed + 1),
               "untrained_control": measure(control, held_out, args.seed + 1),
               "train_digits": len(train), "epochs": args.epochs, "train_seconds": round(trained_s, 1)}
    print(f"trained {args.epochs} epochs on {2 * len(train)} canvases in {trained_s:.0f} s")
    report("trained convnet", results["trained"])
    report("untrained control", results["untrained_control"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
