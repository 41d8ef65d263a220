#!/usr/bin/env python3
"""Parity with timm: dfgpu's EfficientNet forward (inference mode) against timm's, on the same weights and input.

    python3 scripts/timm_parity.py [--model efficientnet_b0] [--dfgpu target/release/dfgpu] [--device cuda]

Random seeded weights, with random batch-norm scales, shifts and running statistics (so that inference mode is
really tested), and a random batch of images. timm runs in float64 on the CPU: the reference is the math, not
another float32 run. Prints the relative error (max |dfgpu - timm| / max |timm|) of the pooled features and of
the ImageNet logits; exits 1 when either is over 1e-3.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import timm
import torch
from safetensors.torch import load_file, save_file

TOLERANCE = 1e-3


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientnet_b0")
    ap.add_argument("--dfgpu", default="target/release/dfgpu")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=224)
    a = ap.parse_args()

    torch.manual_seed(0)
    model = timm.create_model(a.model, pretrained=False).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(a.batch, 3, a.size, a.size)
    with torch.no_grad():
        m64 = model.double()
        feats = m64.forward_head(m64.forward_features(x.double()), pre_logits=True)
        logits = m64.classifier(feats)

    variant = a.model.removeprefix("efficientnet_")
    with tempfile.TemporaryDirectory() as tmp:
        weights, inp, out = (os.path.join(tmp, f) for f in ("weights.safetensors", "in.safetensors", "out.safetensors"))
        # The model is float64 by now (.double() converts in place): its weights go out as float32, which dfgpu
        # reads exactly; the batch norms' int64 counters as they are.
        state = {k: v.float() if v.is_floating_point() else v for k, v in model.state_dict().items()}
        save_file(state, weights)
        save_file({"images": x}, inp)
        cmd = [a.dfgpu, "timm-forward", "--device", a.device, "--backbone", variant, "--weights", weights,
               "--input", inp, "--out", out]
        subprocess.run(cmd, check=True)
        got = load_file(out)

    ok = True
    for name, ref in (("features", feats), ("logits", logits)):
        g = got[name].double()
        if g.shape != ref.shape:
            print(f"{name}: dfgpu shape {tuple(g.shape)}, timm {tuple(ref.shape)}: FAIL")
            ok = False
            continue
        rel = ((g - ref).abs().max() / ref.abs().max()).item()
        verdict = "ok" if rel <= TOLERANCE else "FAIL"
        ok &= rel <= TOLERANCE
        print(f"{a.model} {name} {tuple(ref.shape)}: relative error {rel:.2e} (tolerance {TOLERANCE:.0e}) {verdict}")
    print("PARITY PASS" if ok else "PARITY FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
