#!/usr/bin/env python3
"""Convert PyTorch GDH checkpoints (the public code's module layout) to a gdh-index model.

The public GDH code (github YCJGG/GDH, ``category/network.py``) saves state_dicts whose
generator keys are ours: conv1, conv1_norm, conv2, conv2_norm, conv3, conv3_norm,
resnet_blocks.{i}.conv1/conv1_norm/conv2/conv2_norm, attention1, deconv1, deconv1_norm,
deconv2, deconv2_norm, deconv3; its hash net is a torchvision resnet18 whose ``fc`` maps
to the code bits, its discriminators are PatchGANs conv1 ... conv5. Typical use, from the
repository root::

    python3 Tools/convert_gdh_checkpoint.py --generator G_A.pth --hashnet H_A.pth \\
        --out model.safetensors

Each checkpoint may be a state_dict, a dict holding one (under "state_dict", "model",
"net", ... or as its only dict value), an ``nn.Module`` (only with ``--unsafe-load``,
which unpickles arbitrary objects), or a safetensors file. ``module.`` prefixes
(DataParallel) are stripped and ``num_batches_tracked`` counters dropped. The
configuration is inferred from the tensors: ngf and the block count from the generator,
attention from the presence of attention1.* (``--attention`` overrides), the norm from
the presence of running statistics (``--norm`` overrides, but must agree), the hash net's
stage widths and blocks per stage from layer{k}.{j}, bits from fc, ndf from D_I's conv1
(64 if no discriminator). Every tensor must load strictly into our PyTorch definitions
(Tools/make_network_fixtures.py); the written file is read back with gdh_torch and must
reproduce the checkpoint networks' outputs exactly.

Known differences from the public code (reported as warnings):

* The public generator computes attention1 but, with ``flag=False`` as in its training
  scripts, never applies the mask; when it does (``flag=True``) the mask is a
  thresholded softmax over positions. Our attention multiplies the features by
  sigmoid(attention1(x)). ``--attention off`` drops attention1.* and reproduces the
  public generator with ``flag=False``.
* The public hash net replaces resnet18's fc by Linear(2048, bits), which only fits the
  old torchvision AvgPool2d(7) over the 8x8 layer4 map of a 256-px input (a 2x2x512
  feature). Ours pools globally to 512 features; such a checkpoint cannot be converted
  exactly and is refused.
* The public discriminators output ``bits`` channels (``discriminator(3, opt.bit)``);
  ours output one, so such discriminators are refused.

The Swift reader loads G_S, D_I and D_S together when G_S is present, so give all three
of --generator-s, --disc-i, --disc-s or none.
"""

import argparse
import os
import re
import sys

import torch

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TOOLS)
import gdh_torch  # noqa: E402

STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "params",
                   "weights", "generator", "G", "G_A", "H", "H_A", "hashnet")


class ConvertError(Exception):
    pass


def warn(msg):
    print("convert_gdh_checkpoint: warning: " + msg, file=sys.stderr)


# ---------------------------------------------------------------------------
# Reading checkpoints
# ---------------------------------------------------------------------------

def is_state_dict(d):
    return isinstance(d, dict) and d and all(isinstance(k, str) for k in d) and \
        all(torch.is_tensor(v) for v in d.values())


def extract_state_dict(obj, path):
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    if is_state_dict(obj):
        return obj
    if isinstance(obj, dict):
        for k in STATE_DICT_KEYS:
            if k in obj:
                try:
                    return extract_state_dict(obj[k], path)
                except ConvertError:
                    pass
        candidates = [v for v in obj.values() if is_state_dict(v) or isinstance(v, torch.nn.Module)]
        if len(candidates) == 1:
            return extract_state_dict(candidates[0], path)
        # A state_dict with some non-tensor entries (e.g. saved hyper-parameters).
        tensors = {k: v for k, v in obj.items() if isinstance(k, str) and torch.is_tensor(v)}
        if tensors and any(k.endswith(".weight") for k in tensors):
            return tensors
        raise ConvertError("%s: no state_dict found (top-level keys: %s)"
                           % (path, ", ".join(map(str, list(obj)[:12]))))
    raise ConvertError("%s: cannot find a state_dict in a %s" % (path, type(obj).__name__))


def read_checkpoint(path, unsafe=False):
    """The checkpoint's tensors by name: prefixes stripped, num_batches_tracked dropped,
    float32."""
    if not os.path.exists(path):
        raise ConvertError("%s does not exist" % path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        sd = load_file(path)
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=not unsafe)
        except Exception as e:  # pickle / zip errors of many types
            hint = "" if unsafe else (" (if it is a pickled module or holds other objects, "
                                      "--unsafe-load reads it with weights_only=False; only "
                                      "for files you trust)")
            first = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip().splitlines()[0]
            raise ConvertError("cannot read %s: %s%s" % (path, first, hint)) from None
        sd = extract_state_dict(obj, path)
    out = {}
    for k, v in sd.items():
        name = k
        while name.startswith("module."):
            name = name[len("module."):]
        if name.endswith("num_batches_tracked"):
            continue
        if name in out:
            raise ConvertError("%s: %s occurs twice after stripping module. prefixes" % (path, name))
        if not v.is_floating_point():
            raise ConvertError("%s: %s is %s, not a float tensor" % (path, k, v.dtype))
        out[name] = v.detach().to(torch.float32).contiguous()
    if not out:
        raise ConvertError("%s has no tensors" % path)
    return out


def shape(sd, name, path):
    if name not in sd:
        raise ConvertError("%s: no %s (keys start %s)" % (path, name, ", ".join(sorted(sd)[:6])))
    return tuple(sd[name].shape)


# ---------------------------------------------------------------------------
# Inference of the configuration
# ---------------------------------------------------------------------------

def detect_norm(sd, prefix_names):
    """'batch' if the norm layers carry running statistics, 'instance' if they carry
    nothing, else an error."""
    stats = any(k.startswith(p + ".running_mean") for k in sd for p in prefix_names)
    affine = any(k.startswith(p + ".weight") for k in sd for p in prefix_names)
    if stats:
        return "batch"
    if affine:
        raise ConvertError("the norm layers have affine parameters but no running statistics "
                           "(InstanceNorm2d(affine=True)?); ours are BatchNorm2d or InstanceNorm2d "
                           "without parameters")
    return "instance"


def infer_generator(sd, path):
    s = shape(sd, "conv1.weight", path)
    if len(s) != 4 or s[1:] != (3, 7, 7):
        raise ConvertError("%s: conv1.weight is %s, expected (ngf, 3, 7, 7)" % (path, list(s)))
    ngf = s[0]
    idx = sorted({int(m.group(1)) for k in sd for m in [re.match(r"resnet_blocks\.(\d+)\.", k)] if m})
    if idx != list(range(len(idx))):
        raise ConvertError("%s: residual blocks %s are not numbered 0..n-1" % (path, idx))
    norm = detect_norm(sd, ["conv1_norm", "conv2_norm", "conv3_norm", "deconv1_norm", "deconv2_norm"])
    attention = any(k.startswith("attention1.") for k in sd)
    return {"ngf": ngf, "generatorBlocks": len(idx), "norm": norm, "attention": attention}


def infer_hashnet(sd, path):
    widths, blocks = [], []
    for k in range(1, 5):
        js = sorted({int(m.group(1)) for n in sd for m in [re.match(r"layer%d\.(\d+)\." % k, n)] if m})
        if not js or js != list(range(len(js))):
            raise ConvertError("%s: layer%d has blocks %s, expected 0..n-1" % (path, k, js))
        blocks.append(len(js))
        widths.append(shape(sd, "layer%d.0.conv1.weight" % k, path)[0])
    if any(n.startswith("layer%d.0.conv3" % k) for n in sd for k in range(1, 5)):
        raise ConvertError("%s: Bottleneck blocks (conv3) found; the hash net must use "
                           "BasicBlocks (resnet18/34)" % path)
    fc = shape(sd, "fc.weight", path)
    if len(fc) != 2:
        raise ConvertError("%s: fc.weight is %s, expected (bits, features)" % (path, list(fc)))
    if fc[1] != widths[3]:
        if fc[1] == 4 * widths[3]:
            raise ConvertError(
                "%s: fc maps %d features, 4 x layer4's %d: the public code's Linear(2048, bits) "
                "for the old torchvision AvgPool2d(7) over an 8x8 layer4 map (2x2x512). Our hash "
                "net pools globally to %d features; this head cannot be converted exactly"
                % (path, fc[1], widths[3], widths[3]))
        raise ConvertError("%s: fc maps %d features, layer4 has %d channels" % (path, fc[1], widths[3]))
    return {"hashWidths": widths, "hashBlocks": blocks, "bits": fc[0]}


def check_discriminator(sd, path):
    s = shape(sd, "conv1.weight", path)
    c5 = shape(sd, "conv5.weight", path)
    if c5[0] != 1:
        raise ConvertError("%s: conv5 has %d output channels; our PatchGAN outputs one (the "
                           "public code's discriminator(3, opt.bit) outputs bits channels)"
                           % (path, c5[0]))
    return s[0], detect_norm(sd, ["conv2_norm", "conv3_norm", "conv4_norm"])


# ---------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------

def load_into(prefix, config, sd, path):
    net = gdh_torch.build_network(prefix, config)
    try:
        return gdh_torch.load_strict(net, sd, "%s (%s)" % (path, prefix))
    except gdh_torch.ModelError as e:
        raise ConvertError(str(e)) from None


def convert(args):
    g = read_checkpoint(args.generator, args.unsafe_load)
    h = read_checkpoint(args.hashnet, args.unsafe_load)
    training = [a for a in (args.generator_s, args.disc_i, args.disc_s) if a]
    if training and len(training) != 3:
        raise ConvertError("give all of --generator-s, --disc-i and --disc-s or none: the Swift "
                           "reader loads G_S, D_I and D_S together")

    gen = infer_generator(g, args.generator)
    hashnet = infer_hashnet(h, args.hashnet)
    if args.norm != "auto" and args.norm != gen["norm"]:
        raise ConvertError("--norm %s, but %s's norm layers are %s norm"
                           % (args.norm, args.generator, gen["norm"]))
    if args.attention == "off" and gen["attention"]:
        g = {k: v for k, v in g.items() if not k.startswith("attention1.")}
        gen["attention"] = False
        print("dropped attention1.* (--attention off)", file=sys.stderr)
    elif args.attention == "on" and not gen["attention"]:
        raise ConvertError("--attention on, but %s has no attention1.*" % args.generator)
    elif gen["attention"]:
        warn("attention1.* present: the converted generator multiplies its features by "
             "sigmoid(attention1(x)); the public code computes the mask but does not apply it "
             "(flag=False), so pass --attention off to reproduce its generator")
    bits = hashnet["bits"]
    if args.bits is not None and args.bits != bits:
        raise ConvertError("--bits %d, but %s's fc has %d outputs" % (args.bits, args.hashnet, bits))

    ndf = 64
    extra = {}
    if training:
        gs = read_checkpoint(args.generator_s, args.unsafe_load)
        di = read_checkpoint(args.disc_i, args.unsafe_load)
        ds = read_checkpoint(args.disc_s, args.unsafe_load)
        if args.attention == "off":
            gs = {k: v for k, v in gs.items() if not k.startswith("attention1.")}
        gen_s = infer_generator(gs, args.generator_s)
        if gen_s != gen:
            raise ConvertError("%s is %s, but %s is %s" % (args.generator_s, gen_s, args.generator, gen))
        ndf, dnorm = check_discriminator(di, args.disc_i)
        ndf_s, dnorm_s = check_discriminator(ds, args.disc_s)
        if (ndf_s, dnorm_s) != (ndf, dnorm):
            raise ConvertError("D_I and D_S differ: ndf %d/%d, norm %s/%s" % (ndf, ndf_s, dnorm, dnorm_s))
        if dnorm != gen["norm"]:
            raise ConvertError("the discriminators use %s norm, the generators %s norm" % (dnorm, gen["norm"]))
        extra = {"G_S": gs, "D_I": di, "D_S": ds}

    config = {"name": args.name, "imageSize": args.image_size, "bits": bits, "ngf": gen["ngf"],
              "generatorBlocks": gen["generatorBlocks"], "norm": gen["norm"],
              "attention": gen["attention"], "ndf": ndf, "hashWidths": hashnet["hashWidths"],
              "hashBlocks": hashnet["hashBlocks"], "resize": args.resize}
    problem = gdh_torch.config_problem(config)
    if problem:
        raise ConvertError("the checkpoints give a configuration the Swift side refuses: " + problem)

    nets = {"G_I": load_into("G_I", config, g, args.generator),
            "H": load_into("H", config, h, args.hashnet)}
    for p, sd in extra.items():
        nets[p] = load_into(p, config, sd, {"G_S": args.generator_s, "D_I": args.disc_i,
                                            "D_S": args.disc_s}[p])

    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    n = gdh_torch.save_model(args.out, config, nets["G_I"], nets["H"], nets.get("G_S"),
                             nets.get("D_I"), nets.get("D_S"))
    verify(args.out, config, nets)
    return config, n


def verify(path, config, nets):
    """Reads the file back and checks tensors and outputs against the loaded networks."""
    config2, nets2 = gdh_torch.load_networks(path)
    if config2 != config:
        raise ConvertError("read back a different configuration: %s" % config2)
    if sorted(nets2) != sorted(nets):
        raise ConvertError("read back networks %s, wrote %s" % (sorted(nets2), sorted(nets)))
    for p in nets:
        a, b = gdh_torch.state_tensors(nets[p]), gdh_torch.state_tensors(nets2[p])
        bad = [k for k in a if not torch.equal(a[k], b[k])]
        if bad or sorted(a) != sorted(b):
            raise ConvertError("%s read back differently: %s" % (p, bad[:5]))
    s = config["imageSize"]
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, s, s, generator=gen) * 2 - 1
    ref = gdh_torch.encode(nets["G_I"], nets["H"], x, x)
    got = gdh_torch.encode(nets2["G_I"], nets2["H"], x, x)
    if not all(torch.equal(u, v) for u, v in zip(ref, got)):
        raise ConvertError("the model read back computes different outputs")


def build_parser():
    p = argparse.ArgumentParser(
        description="Convert PyTorch GDH checkpoints (public YCJGG/GDH layout) to a gdh-index "
                    "model file (safetensors).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", required=True, metavar="G.pth",
                   help="G_I (sketch -> image) checkpoint")
    p.add_argument("--hashnet", required=True, metavar="H.pth",
                   help="hash net checkpoint (resnet18-style, fc -> bits)")
    p.add_argument("--generator-s", metavar="G_S.pth", help="G_S (image -> sketch) checkpoint")
    p.add_argument("--disc-i", metavar="D_I.pth", help="image discriminator checkpoint")
    p.add_argument("--disc-s", metavar="D_S.pth", help="sketch discriminator checkpoint")
    p.add_argument("--bits", type=int, help="code bits (default: the hash net's fc outputs; "
                   "if given it must agree)")
    p.add_argument("--image-size", type=int, default=256, help="input size (default: %(default)s)")
    p.add_argument("--norm", choices=("auto", "batch", "instance"), default="auto",
                   help="normalisation (default: inferred; if given it must agree)")
    p.add_argument("--attention", choices=("auto", "on", "off"), default="auto",
                   help="auto: on iff attention1.* exist; off: drop attention1.* (default: auto)")
    p.add_argument("--resize", choices=("area", "bilinear"), default="area",
                   help="image resize filter recorded in the model (default: %(default)s)")
    p.add_argument("--name", default="converted", help="configuration name (default: %(default)s)")
    p.add_argument("--unsafe-load", action="store_true",
                   help="torch.load with weights_only=False (pickled modules; trusted files only)")
    p.add_argument("--out", required=True, metavar="model.safetensors", help="output model file")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        config, n = convert(args)
    except (ConvertError, gdh_torch.ModelError) as e:
        print("convert_gdh_checkpoint: error: %s" % e, file=sys.stderr)
        return 1
    print("wrote %s: %d tensors, %s" % (args.out, n, ", ".join(
        "%s=%s" % (k, config[k]) for k in gdh_torch.CONFIG_KEYS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
