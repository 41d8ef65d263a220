"""Reads and writes safetensors files with nothing but torch (no safetensors or numpy package needed): the format
is an 8-byte little-endian header length, a JSON header of names, dtypes, shapes and byte offsets, then the data."""
import json
import struct

import torch

_CODES = {torch.float32: ("F32", "f"), torch.int64: ("I64", "q")}


def write(path, tensors):
    """Writes a dict of name -> tensor; floating tensors as float32, integer ones as int64."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        t = t.float() if t.is_floating_point() else t.long()
        dtype, code = _CODES[t.dtype]
        blob = struct.pack(f"<{t.numel()}{code}", *t.flatten().tolist())
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for blob in blobs:
            f.write(blob)


def read(path):
    """Returns a dict of name -> float32 tensor (dfgpu writes float32 only)."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    out = {}
    for name, v in header.items():
        if name == "__metadata__":
            continue
        if v["dtype"] != "F32":
            raise ValueError(f"{path}: tensor {name} is {v['dtype']}, expected F32")
        a, b = v["data_offsets"]
        values = struct.unpack(f"<{(b - a) // 4}f", data[8 + n + a : 8 + n + b])
        out[name] = torch.tensor(values, dtype=torch.float32).reshape(v["shape"])
    return out
