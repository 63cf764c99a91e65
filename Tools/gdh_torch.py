#!/usr/bin/env python3
"""PyTorch access to gdh-index model files.

A model file is safetensors with the tensors of each network under a prefix
(``G_I.<name>``, ``H.<name>`` and, in full files, ``G_S.``, ``D_I.``, ``D_S.``; the
names inside a network are its PyTorch state_dict names) and string metadata:

    format          "gdh-index-model"
    format_version  "1"
    config          JSON of the Swift ``GDHConfiguration``: name, imageSize, bits, ngf,
                    generatorBlocks, norm ("batch" | "instance"), attention, ndf,
                    hashWidths, hashBlocks, resize ("area" | "bilinear"), and optionally
                    noGenerator (true) and hashNet ("resnet", the default when absent, or
                    "lite0": EfficientNet-Lite0, for which hashWidths/hashBlocks are kept but
                    ignored and imageSize must be a multiple of 32)
    bits, image_size, preprocessing

(see Sources/GDH/Model.swift). The networks are the PyTorch definitions of
Tools/make_network_fixtures.py, which the Swift networks are tested against; a lite0 H is
the PyPI package efficientnet-lite-pytorch's EfficientNet (see Lite0HashNet below).

The lite0 hashing network (Sources/GDH/EfficientNetLite.swift): H.<name> with exactly the
package's state_dict names: _conv_stem.weight (32,3,3,3), _bn0.{weight,bias,running_mean,
running_var}, _blocks.<i>.{_expand_conv.weight, _bn0.*} (i = 1...15; block 0 has no
expansion), _blocks.<i>._depthwise_conv.weight, _blocks.<i>._bn1.*,
_blocks.<i>._project_conv.weight, _blocks.<i>._bn2.*, _conv_head.weight (1280,320,1,1),
_bn1.* (1280), _fc.weight (bits, 1280), _fc.bias (bits). Input x in [-1, 1]
(pixel / 127.5 - 1, as for every H); the network first applies the fixed affine map
x * 0.99609375 + 0.00390625 (= x * 127.5/128 + 0.5/128) on every channel, which turns x
into (pixel - 127) / 128, the normalisation the ImageNet weights expect (no parameters,
nothing stored); then stem, the 16 blocks (ReLU6, BatchNorm eps 1e-3 momentum 0.01,
TF-SAME padding, no squeeze-excitation), head, global average pooling, _fc to the bits.
No dropout and no drop-connect (stochastic depth), also in training mode.

    import gdh_torch
    config, G_I, H = gdh_torch.load_model("model.safetensors")   # eval mode
    with torch.inference_mode():
        image_code = H(x) > 0             # x: (N, 3, S, S) float32 in [-1, 1]
        sketch_code = H(G_I(x)) > 0
    gdh_torch.save_model("copy.safetensors", config, G_I, H)

Files are written with make_fixtures' deterministic encoder (sorted metadata and tensor
names, the layout of the Swift `SafetensorsFile.encode()`), float32 only, without
BatchNorm's ``num_batches_tracked`` counters, which the Swift side does not keep.
"""

import json
import os
import sys

import torch

TOOLS = os.path.dirname(os.path.abspath(__file__))
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)
import make_fixtures  # noqa: E402  (deterministic safetensors writer)
from make_network_fixtures import Discriminator, Generator, HashNet  # noqa: E402

FORMAT = "gdh-index-model"
FORMAT_VERSION = "1"
PREFIXES = ("G_I", "H", "G_S", "D_I", "D_S")
TRAINING_PREFIXES = ("G_S", "D_I", "D_S")
CONFIG_KEYS = ("name", "imageSize", "bits", "ngf", "generatorBlocks", "norm", "attention",
               "ndf", "hashWidths", "hashBlocks", "resize")
HASH_NETS = ("resnet", "lite0")


class ModelError(Exception):
    pass


# ---------------------------------------------------------------------------
# Configuration (mirrors Sources/GDH/Configuration.swift)
# ---------------------------------------------------------------------------

def paper_config(bits=64):
    return {"name": "paper", "imageSize": 256, "bits": bits, "ngf": 32, "generatorBlocks": 9,
            "norm": "batch", "attention": True, "ndf": 64, "hashWidths": [64, 128, 256, 512],
            "hashBlocks": [2, 2, 2, 2], "resize": "area"}


def small_config(bits=64):
    return {"name": "small", "imageSize": 64, "bits": bits, "ngf": 8, "generatorBlocks": 3,
            "norm": "batch", "attention": True, "ndf": 16, "hashWidths": [16, 32, 64, 128],
            "hashBlocks": [1, 1, 1, 1], "resize": "area"}


def lite0_config(bits=64):
    """`small`'s generator with EfficientNet-Lite0 as H at 128 px (GDHConfiguration.lite0)."""
    return dict(small_config(bits), name="lite0", imageSize=128, hashNet="lite0")


def named_config(name, bits=64):
    return {"paper": paper_config, "small": small_config, "lite0": lite0_config}[name](bits)


def hash_net_kind(c):
    """"resnet" (also when the configuration does not say) or "lite0"."""
    return c.get("hashNet") or "resnet"


def config_problem(c):
    """Why the Swift side would refuse this configuration, or None (GDHConfiguration.problem
    plus the JSON decoder's requirements)."""
    missing = [k for k in CONFIG_KEYS if k not in c]
    if missing:
        return "config lacks %s" % ", ".join(missing)
    ints = ("imageSize", "bits", "ngf", "generatorBlocks", "ndf")
    if any(type(c[k]) is not int for k in ints):
        return "imageSize, bits, ngf, generatorBlocks and ndf must be integers"
    if not isinstance(c["name"], str) or not isinstance(c["resize"], str):
        return "name and resize must be strings"
    if type(c["attention"]) is not bool:
        return "attention must be a boolean"
    if c["norm"] not in ("batch", "instance"):
        return "norm must be batch or instance, not %r" % (c["norm"],)
    b = c["bits"]
    if b < 32 or b > 1024 or b % 32:
        return "bits must be 32 to 1024 in steps of 32, not %d" % b
    s = c["imageSize"]
    if s < 16 or s > 1024 or s % 4:
        return "image size must be a multiple of 4 from 16 to 1024"
    if c["ngf"] < 1 or c["ndf"] < 1 or c["generatorBlocks"] < 0:
        return "network widths must be positive"
    w, k = c["hashWidths"], c["hashBlocks"]
    if (not isinstance(w, list) or not isinstance(k, list) or len(w) != 4 or len(k) != 4
            or any(type(v) is not int or v < 1 for v in w + k)):
        return "the hash net needs four stages of positive widths and block counts"
    if c["resize"] not in ("area", "bilinear"):
        return "resize must be area or bilinear"
    if c.get("hashNet") is not None and c["hashNet"] not in HASH_NETS:
        return "hashNet must be resnet or lite0, not %r" % (c["hashNet"],)
    if hash_net_kind(c) == "lite0" and s % 32:
        return "EfficientNet-Lite0 needs an image size that is a multiple of 32, not %d" % s
    return None


def check_config(c):
    p = config_problem(c)
    if p:
        raise ModelError("bad model configuration: " + p)


def preprocessing_description(c):
    """Exactly GDHModel.preprocessingDescription."""
    return ("RGB; resize (%s) to %dx%d; scale v/255 to [-1, 1] with mean 0.5 and std 0.5 per "
            "channel; code bit = 1 where H(x) > 0" % (c["resize"], c["imageSize"], c["imageSize"]))


# ---------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------

# The lite0 input map: x in [-1, 1] (x = p / 127.5 - 1) to (p - 127) / 128.
LITE0_INPUT_SCALE = 127.5 / 128   # 0.99609375, exact in float32
LITE0_INPUT_SHIFT = 0.5 / 128     # 0.00390625
LITE0_STAGE_BLOCKS = (1, 2, 2, 3, 3, 4, 1)
LITE0_BLOCK_STAGES = tuple(s for s, n in enumerate(LITE0_STAGE_BLOCKS) for _ in range(n))
_lite0_class = None


def lite0_class():
    """Lite0HashNet, a subclass of the package's EfficientNet (imported on first use)."""
    global _lite0_class
    if _lite0_class is not None:
        return _lite0_class
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ModelError("the lite0 hashing network needs the PyPI package efficientnet-lite-pytorch "
                         "(pip install efficientnet-lite-pytorch==0.1.0)") from None

    class Lite0HashNet(EfficientNet):
        """The package's EfficientNet-Lite0 with `bits` outputs; its state_dict names are the
        package's. forward(x): x in [-1, 1] -> x * LITE0_INPUT_SCALE + LITE0_INPUT_SHIFT ->
        the package's forward (no dropout, no drop-connect). `frozen_stages` K > 0 keeps the
        stem and the blocks of the first K stages in eval mode whatever train() says (their
        parameters are left out of the optimiser by the trainer)."""

        frozen_stages = 0

        def forward(self, x):
            return super().forward(x * LITE0_INPUT_SCALE + LITE0_INPUT_SHIFT)

        def frozen_modules(self):
            if self.frozen_stages <= 0:
                return []
            return [self._conv_stem, self._bn0] + [
                b for b, s in zip(self._blocks, LITE0_BLOCK_STAGES) if s < self.frozen_stages]

        def train(self, mode=True):
            super().train(mode)
            for m in self.frozen_modules():
                m.train(False)
            return self

    _lite0_class = Lite0HashNet
    return Lite0HashNet


def build_lite0(bits, image_size):
    """An untrained (PyTorch default init) lite0 H with `bits` outputs, TF-SAME padding
    fixed for image_size x image_size inputs, dropout 0, drop-connect 0."""
    return lite0_class().from_name("efficientnet-lite0", num_classes=bits, image_size=image_size,
                                   dropout_rate=0.0, drop_connect_rate=0.0)


def lite0_backbone_name(name):
    """True for the tensors ImageNet weights provide and the backbone learning rate applies
    to: everything but the head _fc (EfficientNetLite0.isBackbone)."""
    return not name.startswith("_fc.")

def build_network(prefix, c):
    """An untrained network of the configuration, in eval mode."""
    if prefix in ("G_I", "G_S"):
        net = Generator(c["ngf"], c["generatorBlocks"], c["norm"], c["attention"])
    elif prefix == "H":
        if hash_net_kind(c) == "lite0":
            net = build_lite0(c["bits"], c["imageSize"])
        else:
            net = HashNet(c["hashWidths"], c["hashBlocks"], c["bits"])
    elif prefix in ("D_I", "D_S"):
        net = Discriminator(c["ndf"], c["norm"])
    else:
        raise ValueError(prefix)
    return net.eval()


def state_tensors(net):
    """float32 copies of a network's parameters and float buffers by state_dict name,
    without num_batches_tracked."""
    out = {}
    for name, v in net.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        if not v.is_floating_point():
            raise ModelError("%s is %s, not a float tensor" % (name, v.dtype))
        out[name] = v.detach().to(torch.float32).contiguous().clone()
    return out


def load_strict(net, tensors, what="network"):
    """Loads `tensors` (state_dict names) into `net`: every parameter and float buffer
    must be present with its shape and nothing else may be (num_batches_tracked aside,
    which is ignored if present and reset to the module's value otherwise)."""
    own = net.state_dict()
    state, problems = {}, []
    for name, v in own.items():
        if name.endswith("num_batches_tracked"):
            state[name] = v
            continue
        t = tensors.get(name)
        if t is None:
            problems.append("missing %s" % name)
        elif tuple(t.shape) != tuple(v.shape):
            problems.append("%s has shape %s, expected %s" % (name, list(t.shape), list(v.shape)))
        elif not t.is_floating_point():
            problems.append("%s is %s, not a float tensor" % (name, t.dtype))
        else:
            state[name] = t.to(torch.float32)
    extra = sorted(k for k in tensors if k not in own and not k.endswith("num_batches_tracked"))
    problems += ["unexpected %s" % k for k in extra]
    if problems:
        more = " (and %d more)" % (len(problems) - 8) if len(problems) > 8 else ""
        raise ModelError("%s does not fit: %s%s" % (what, "; ".join(problems[:8]), more))
    net.load_state_dict(state, strict=True)
    return net


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------

def read_file(path):
    """(metadata, tensors) of a safetensors file."""
    from safetensors import safe_open
    tensors = {}
    try:
        with safe_open(path, framework="pt") as f:
            metadata = dict(f.metadata() or {})
            for k in f.keys():
                tensors[k] = f.get_tensor(k)
    except Exception as e:  # safetensors raises its own error types
        raise ModelError("cannot read model %s: %s" % (path, e)) from None
    return metadata, tensors


def load_networks(path):
    """(config, {prefix: network}) with G_I and H, and G_S, D_I, D_S when the file has
    G_S (then it must have all three, as for the Swift reader). All in eval mode."""
    metadata, tensors = read_file(path)
    if metadata.get("format") != FORMAT:
        raise ModelError("%s is not a gdh-index model (metadata format is %s)"
                         % (path, metadata.get("format", "missing")))
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ModelError("%s has model format version %s, this reads %s"
                         % (path, metadata.get("format_version", "?"), FORMAT_VERSION))
    try:
        config = json.loads(metadata["config"])
    except (KeyError, ValueError):
        raise ModelError("%s has no readable model configuration" % path) from None
    check_config(config)
    training = any(k.startswith("G_S.") for k in tensors)
    prefixes = PREFIXES if training else ("G_I", "H")
    if config.get("noGenerator") and not training:
        prefixes = ("H",)   # a model trained without a generator has no G_I
    stray = sorted(k for k in tensors if k.split(".", 1)[0] not in prefixes or "." not in k)
    if stray:
        raise ModelError("model %s: unexpected tensor %s" % (path, stray[0]))
    nets = {}
    for p in prefixes:
        sub = {k[len(p) + 1:]: v for k, v in tensors.items() if k.startswith(p + ".")}
        nets[p] = load_strict(build_network(p, config), sub, "%s of model %s" % (p, path))
    return config, nets


def load_model(path):
    """(config dict, G_I, H) of a model file, strictly loaded, in eval mode."""
    config, nets = load_networks(path)
    return config, nets.get("G_I"), nets["H"]


def model_tensors(config, G_I, H, G_S=None, D_I=None, D_S=None):
    """The tensors of a model file, checked against the configuration."""
    check_config(config)
    given = {"G_I": G_I, "H": H, "G_S": G_S, "D_I": D_I, "D_S": D_S}
    training = [p for p in TRAINING_PREFIXES if given[p] is not None]
    if training and len(training) != 3:
        raise ModelError("a model file holds G_S, D_I and D_S together or none of them "
                         "(the Swift reader loads all three when G_S is present); got %s"
                         % ", ".join(training))
    if G_I is None and not config.get("noGenerator"):
        raise ModelError("only a model trained without a generator (noGenerator) may omit G_I")
    out = {}
    for p, net in given.items():
        if net is None:
            continue
        t = state_tensors(net)
        # The network must be exactly the one the configuration describes.
        load_strict(build_network(p, config), t, "%s against the configuration" % p)
        for k, v in t.items():
            out[p + "." + k] = v
    return out


def model_metadata(config):
    check_config(config)
    c = {k: config[k] for k in CONFIG_KEYS}
    if config.get("noGenerator"):
        c["noGenerator"] = True
    if config.get("hashNet") is not None:   # absent for the ResNet, as the Swift encoder writes it
        c["hashNet"] = config["hashNet"]
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": json.dumps(c, separators=(",", ":")),
        "bits": str(c["bits"]),
        "image_size": str(c["imageSize"]),
        "preprocessing": preprocessing_description(c),
    }


def save_model(path, config, G_I, H, G_S=None, D_I=None, D_S=None):
    """Writes a gdh-index model file (atomically; deterministic bytes). Returns the
    number of tensors written."""
    tensors = model_tensors(config, G_I, H, G_S, D_I, D_S)
    make_fixtures.write(path, tensors, model_metadata(config))
    return len(tensors)


def encode(G_I, H, images=None, sketches=None):
    """H outputs (N, bits) of images and of sketches (through G_I); None for no input."""
    with torch.inference_mode():
        hi = H(images) if images is not None else None
        hs = (H(G_I(sketches)) if G_I is not None else H(sketches)) if sketches is not None else None
    return hi, hs


if __name__ == "__main__":
    # python3 Tools/gdh_torch.py MODEL: prints its configuration and tensor count.
    for p in sys.argv[1:]:
        cfg, nets = load_networks(p)
        n = sum(sum(t.numel() for t in state_tensors(net).values()) for net in nets.values())
        print("%s: %s; networks %s; %d floats" % (p, json.dumps(cfg), ", ".join(nets), n))
