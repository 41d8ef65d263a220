#!/usr/bin/env python3
"""Hand-made spectral features on a folder dataset, and logistic regression on them with each fake group held out
(docs/generalization-study.md, "A linear probe"). It asks whether a cue is in the images at all, and whether
training on the other groups can teach it, with no dfgpu code in the loop. Needs numpy and Pillow.

    python3 scripts/spectral-probe.py DATA [--crop 64] [--self-fakes]

DATA is a folder dataset (real/, fake/GROUP/), e.g. the built-in set with all four families at 128 px:
`dfgpu synth OUT --families upconv,nearest,fingerprint,periodic --size 128`.
Features of each image's centre crop (luma of the colour channels' mean log spectrum):
  peak      the largest amount by which a bin's log magnitude stands above the mean of its 24 neighbours (5 x 5),
            the zero frequency and its first rings left out: a periodic pattern anywhere in the spectrum;
  top8      the mean of the 8 largest such amounts;
  hf        the mean log magnitude at a quarter of the sampling rate and above: what resampling removes.
"""
import argparse
import glob
import io
import os

import numpy as np
from PIL import Image


def centre_crop(img, crop):
    a = np.asarray(img.convert("RGB"), dtype=np.float64) / 255
    h, w, _ = a.shape
    y, x = (h - crop) // 2, (w - crop) // 2
    return a[y : y + crop, x : x + crop]


def features(img, crop):
    a = centre_crop(img, crop)
    log = np.log(np.abs(np.fft.fft2(a, axes=(0, 1))) / crop + 1e-6).mean(2)
    neighbours = sum(
        np.roll(np.roll(log, dy, 0), dx, 1) for dy in range(-2, 3) for dx in range(-2, 3) if dy or dx
    ) / 24
    f = np.minimum(np.arange(crop), crop - np.arange(crop))
    away = (f[:, None] + f[None, :]) > 3
    excess = np.sort((log - neighbours)[away])[::-1]
    high = (f[:, None] >= crop // 4) | (f[None, :] >= crop // 4)
    return [excess[0], excess[:8].mean(), log[high].mean()]


NAMES = ["peak", "top8", "hf"]


def auc(pos, neg):
    pos, neg = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return (pos > neg).mean() + 0.5 * (pos == neg).mean()


def logistic(x, y, steps=3000, l2=1e-3):
    """Class-balanced logistic regression on standardized features, by gradient descent: a scoring function."""
    mu, sd = x.mean(0), x.std(0) + 1e-9
    xs = (x - mu) / sd
    weight = np.where(y == 1, 0.5 / y.sum(), 0.5 / (1 - y).sum())
    w, b = np.zeros(x.shape[1]), 0.0
    for _ in range(steps):
        g = (1 / (1 + np.exp(-(xs @ w + b))) - y) * weight
        w -= xs.T @ g + l2 * w
        b -= g.sum()
    return lambda z: ((z - mu) / sd) @ w


def tile_fake(path, rng):
    """A real plus a random tile pattern (period 2 to 8, amplitude 2 to 8 of 255) at full resolution, JPEG 70 to 95:
    the upsampling grid's periodic trace without its loss of high frequencies."""
    a = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    k = int(rng.integers(2, 9))
    tile = rng.standard_normal((k, k, 3))
    tile = (tile - tile.mean((0, 1))) / (tile.std() + 1e-9)
    pattern = np.tile(tile, (a.shape[0] // k + 1, a.shape[1] // k + 1, 1))[: a.shape[0], : a.shape[1]]
    out = io.BytesIO()
    Image.fromarray(np.clip(a + rng.uniform(2, 8) * pattern, 0, 255).astype(np.uint8)).save(
        out, "JPEG", quality=int(rng.integers(70, 96))
    )
    out.seek(0)
    return Image.open(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data")
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--self-fakes", action="store_true", help="add one tile-pattern fake per training real")
    args = ap.parse_args()
    reals = sorted(glob.glob(os.path.join(args.data, "real", "*")))
    groups = sorted(os.path.basename(g) for g in glob.glob(os.path.join(args.data, "fake", "*")))
    feats = lambda paths: np.array([features(Image.open(p), args.crop) for p in paths])
    real = feats(reals)
    fake = {g: feats(sorted(glob.glob(os.path.join(args.data, "fake", g, "*")))) for g in groups}

    print(f"each feature's AUC alone (centre {args.crop} x {args.crop}; below 0.5: the fakes score lower)")
    print("group".ljust(12), *(n.rjust(6) for n in NAMES))
    for g in groups:
        print(g.ljust(12), *(f"{auc(fake[g][:, i], real[:, i]):6.3f}" for i in range(len(NAMES))))

    rng = np.random.default_rng(0)
    order = rng.permutation(len(reals))
    train, test = order[: len(order) * 4 // 5], order[len(order) * 4 // 5 :]
    extra = [feats([]).reshape(0, len(NAMES))]
    if args.self_fakes:
        extra = [np.array([features(tile_fake(reals[i], rng), args.crop) for i in train])]
    print("\nlogistic regression, trained on the other groups" + (" and tile-pattern self-fakes" if args.self_fakes else ""))
    print("features".ljust(16), *(g.rjust(12) for g in groups))
    for cols in [[2], [0, 2], [0, 1, 2]]:
        row = []
        for held in groups:
            fakes = np.vstack([fake[g] for g in groups if g != held] + extra)
            x = np.vstack([real[train], fakes])[:, cols]
            y = np.r_[np.zeros(len(train)), np.ones(len(fakes))]
            score = logistic(x, y)
            row.append(f"{auc(score(fake[held][:, cols]), score(real[test][:, cols])):12.3f}")
        print("+".join(NAMES[c] for c in cols).ljust(16), *row)


if __name__ == "__main__":
    main()
