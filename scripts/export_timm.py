#!/usr/bin/env python3
"""Exports a timm EfficientNet's state_dict (running statistics included) as safetensors, for
`dfgpu train --pretrained FILE` and `dfgpu timm-forward`.

    python3 scripts/export_timm.py efficientnet_b0 b0.safetensors             # ImageNet weights (downloads)
    python3 scripts/export_timm.py efficientnet_b0 b0.safetensors --random    # timm's random init, seeded

Needs torch and timm (which brings the safetensors package). dfgpu reads timm's names as they are (conv_stem, bn1,
blocks.i.j.*, conv_head, bn2, classifier); it skips num_batches_tracked and keeps the classifier only for the parity
check.
"""
import argparse

import timm
import torch
from safetensors.torch import save_file


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="timm name: efficientnet_b0 ... efficientnet_b7")
    ap.add_argument("out", help="the .safetensors file to write")
    ap.add_argument("--random", action="store_true", help="no download: timm's random initialization")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    model = timm.create_model(a.model, pretrained=not a.random)
    save_file(model.state_dict(), a.out)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {a.out}: {a.model}, {n / 1e6:.2f} M parameters")


if __name__ == "__main__":
    main()
