"""Generated colour data: 32×32 RGB PNGs of a disc, a square or a cross (the class) in a random
colour, size and place on a background of another random colour, plus Gaussian noise of
``--noise`` levels (rounded, clipped to 0…255). Written as ``train/<class>/*.png`` and
``test/<class>/*.png``, so ``pyrovae train --dataset OUT`` uses the folder's own test split.

The noise sets a floor no model can beat: a value's noise, rounded to a level, has entropy
≈ ½ log₂(2πe σ²) bits (3.63 bits for σ = 3); the shapes add little on top.

    python benchmarks/colour_shapes.py /tmp/shapes --train 5000 --test 1000
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("disc", "square", "cross")
SIDE = 32


def draw(rng: np.random.Generator, kind: int, noise: float) -> np.ndarray:
    """One (32, 32, 3) uint8 image of shape ``CLASSES[kind]``."""
    y, x = np.mgrid[0:SIDE, 0:SIDE] + 0.5
    cy, cx = rng.uniform(9, SIDE - 9, size=2)
    r = rng.uniform(4, 8)
    if kind == 0:
        mask = (x - cx) ** 2 + (y - cy) ** 2 < r**2
    elif kind == 1:
        mask = (np.abs(x - cx) < r) & (np.abs(y - cy) < r)
    else:
        bar = r / 3
        mask = ((np.abs(x - cx) < r) & (np.abs(y - cy) < bar)) | (
            (np.abs(y - cy) < r) & (np.abs(x - cx) < bar)
        )
    background, colour = rng.uniform(0, 255, size=(2, 3))
    image = np.where(mask[..., None], colour, background) + rng.normal(0, noise, (SIDE, SIDE, 3))
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--train", type=int, default=5000, help="training images")
    p.add_argument("--test", type=int, default=1000, help="test images")
    p.add_argument("--noise", type=float, default=3.0, help="noise σ, in levels")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    for split, n in (("train", args.train), ("test", args.test)):
        for i in range(n):
            kind = i % len(CLASSES)
            folder = args.out / split / CLASSES[kind]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(draw(rng, kind, args.noise)).save(folder / f"{i:05d}.png")
    floor = 0.5 * math.log2(2 * math.pi * math.e * args.noise**2)
    print(f"{args.train} + {args.test} images in {args.out}; noise floor ≈ {floor:.2f} bits/dim")


if __name__ == "__main__":
    main()
