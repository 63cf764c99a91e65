#!/usr/bin/env python3
"""PyTorch reference fixtures for the Swift NeuralNet layers.

Run from the repository root:

    pip install "torch==2.13.0+cpu" safetensors numpy   # torch from the local wheel folder
    python3 Tools/make_fixtures.py
    python3 Tools/make_fixtures.py grouped_conv2d relu6   # only the cases with these prefixes

It writes one safetensors file per case into Tests/NeuralNetTests/Fixtures/
(`<case>.safetensors`) and prints each file it wrote. The output is deterministic:
running it again produces byte-identical files (files whose bytes did not change are
left untouched; others are written to a temporary name and renamed into place). The
files are encoded by this script with sorted metadata keys and tensor names (the
`safetensors` package orders metadata randomly) and checked by loading them back with
`safetensors.torch.load`.

Conventions
-----------
* float32 everywhere (except the cross_entropy `target`, which is I64), NCHW, CPU,
  `torch.use_deterministic_algorithms(True)`, one thread.
* Seeding: `torch.manual_seed(0)` once, then `torch.manual_seed(seed)` at the start of
  every case, where seed = crc32(case name) & 0x7FFFFFFF (stored as metadata "seed").
  Within a case the random draws happen in this order: module construction (PyTorch's
  default init), any explicit randomisation of parameters/buffers, the input(s), the
  forward pass (dropout's mask), then `grad_output`.
* Layer cases: x (requires_grad) -> y = f(x); g = randn_like(y); (y * g).sum().backward().

Tensor names
------------
Layer cases (one input):
    input          x
    output         y = f(x)
    grad_output    g (the upstream gradient)
    grad_input     x.grad = dL/dx with L = sum(y * g)
    param.<name>   every parameter, PyTorch state_dict name (param.weight, param.bias)
    grad.<name>    its gradient (grad.weight, grad.bias)
    buffer.<name>  float buffers AFTER the forward (buffer.running_mean, buffer.running_var);
                   num_batches_tracked (an integer counter) is not saved.
  batchnorm_train additionally has buffer.running_mean_before / buffer.running_var_before:
    the (randomised) running statistics before the forward, to be loaded into the layer;
    buffer.running_mean / buffer.running_var are the values after the momentum update.
  batchnorm_eval: buffer.running_mean / buffer.running_var are the randomised running
    statistics that the eval-mode forward uses (saved before the forward; eval does not
    change them).
  dropout: buffer.mask = (y != 0) as float32; y = x * mask / (1 - p) and
    grad_input = g * mask / (1 - p).
Two-input cases (add):
    input, input2, output, grad_output, grad_input, grad_input2
Loss cases (mse_loss, l1_loss, cross_entropy; reduction "mean"):
    input          prediction (cross_entropy: logits of shape (N, C))
    target         same shape as input (cross_entropy: I64 class indices of shape (N,))
    output         the loss, shape [1]
    grad_output    [1.0] (the loss is backpropagated with g = 1)
    grad_input     d loss / d input
Optimizer cases (adam_step, sgd_step): the same gradient is applied at every step.
    param.before   the parameter before the first step
    grad           the gradient used for every step
    param.after_1  the parameter after 1 step
    param.after_2  after 2 steps
    param.after_3  after 3 steps

Metadata (`__metadata__`, all values are strings)
-------------------------------------------------
Every file has:
    "layer"          the kind (see below), "case" (the file's base name), "seed",
                     "torch_version".
Layer cases also have "training": "true" | "false" (the module's mode), plus the
constructor settings under PyTorch's argument names; integers as "3", floats as
Python repr ("1e-05", "0.1"), booleans as "true" / "false":
    conv2d            in_channels out_channels kernel_size stride padding dilation groups
                      bias padding_mode ("zeros" | "reflect")
    conv_transpose2d  in_channels out_channels kernel_size stride padding output_padding
                      dilation groups bias
    grouped_conv2d    in_channels out_channels kernel_size stride padding ("same" for
                      TensorFlow SAME as efficientnet-pytorch's Conv2dDynamicSamePadding, else
                      the symmetric padding) dilation groups bias, and the SAME amounts
                      pad_top pad_left pad_bottom pad_right
    batchnorm         num_features eps momentum affine track_running_stats
    instancenorm      num_features eps momentum affine track_running_stats
    relu, relu6, tanh, sigmoid, add   (nothing else)
    leaky_relu        negative_slope
    softmax           dim
    maxpool           kernel_size stride padding dilation ceil_mode
    avgpool           kernel_size stride padding ceil_mode count_include_pad
    adaptive_avgpool  output_size (a single int: the output is output_size x output_size)
    linear            in_features out_features bias
    upsample_nearest  scale_factor mode ("nearest")
    upsample_bilinear scale_factor mode ("bilinear") align_corners
    dropout           p
    reflection_pad    padding
    zero_pad          padding
    mse_loss, l1_loss reduction
    cross_entropy     reduction ignore_index label_smoothing
    adam              lr betas ("0.5,0.999") beta1 beta2 eps weight_decay amsgrad steps
    sgd               lr momentum dampening weight_decay nesterov steps
"""

import json
import math
import os
import struct
import sys
import zlib

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load as safetensors_load

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "Tests", "NeuralNetTests", "Fixtures")

def case_registry():
    """A new list of (name, make) cases and the decorator that adds to it."""
    cases = []

    def case(name):
        def register(fn):
            cases.append((name, fn))
            return fn
        return register
    return cases, case


CASES, case = case_registry()


def s(v):
    """Metadata string for a value: booleans lower-case, floats as repr."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (tuple, list)):
        return ",".join(s(e) for e in v)
    return repr(v) if isinstance(v, float) else str(v)


def meta(layer, **settings):
    m = {"layer": layer}
    m.update({k: s(v) for k, v in settings.items()})
    return m


def randomise_affine(module):
    """Non-trivial weight / bias for normalisation layers (defaults are ones / zeros)."""
    with torch.no_grad():
        module.weight.uniform_(0.5, 1.5)
        module.bias.normal_(0.0, 0.5)


def run_module(module, x, metadata, buffers_before_forward=False):
    """Forward + backward of `module` on `x`; returns (tensors, metadata)."""
    x = x.clone().requires_grad_(True)
    before = {n: b.detach().clone() for n, b in module.named_buffers() if b.is_floating_point()}
    y = module(x)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    t = {"input": x, "output": y, "grad_output": g, "grad_input": x.grad}
    for n, p in module.named_parameters():
        t["param." + n] = p
        t["grad." + n] = p.grad
    after = {n: b for n, b in module.named_buffers() if b.is_floating_point()}
    for n, b in (before if buffers_before_forward else after).items():
        t["buffer." + n] = b
    metadata = dict(metadata)
    metadata["training"] = s(module.training)
    return t, metadata


def run_two_inputs(f, x, x2, metadata):
    x = x.clone().requires_grad_(True)
    x2 = x2.clone().requires_grad_(True)
    y = f(x, x2)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    t = {"input": x, "input2": x2, "output": y, "grad_output": g,
         "grad_input": x.grad, "grad_input2": x2.grad}
    metadata = dict(metadata)
    metadata["training"] = "true"
    return t, metadata


def run_loss(f, x, target, metadata):
    x = x.clone().requires_grad_(True)
    loss = f(x, target)
    loss.backward()  # g = 1
    t = {"input": x, "target": target, "output": loss.reshape(1),
         "grad_output": torch.ones(1), "grad_input": x.grad}
    return t, metadata


def conv2d_case(name, cin, cout, k, stride, padding, bias=True, padding_mode="zeros", hw=8):
    @case(name)
    def make():
        m = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, bias=bias, padding_mode=padding_mode)
        x = torch.randn(2, cin, hw, hw)
        return run_module(m, x, meta(
            "conv2d", in_channels=cin, out_channels=cout, kernel_size=k, stride=stride, padding=padding,
            dilation=1, groups=1, bias=bias, padding_mode=padding_mode))


conv2d_case("conv2d_zero", 3, 4, 3, 1, 1, hw=7)
conv2d_case("conv2d_stride2", 3, 4, 3, 2, 1)
conv2d_case("conv2d_reflect", 3, 4, 7, 1, 3, padding_mode="reflect")
conv2d_case("conv2d_nobias_k4s2", 3, 4, 4, 2, 1, bias=False)
# Shapes of the direct training kernels' paths: rows of a multiple of 8 (fused) and not,
# output channels past a block of 4, a stride-2 weight gradient with masked rows.
conv2d_case("conv2d_reflect_k7_wide", 8, 5, 7, 1, 3, padding_mode="reflect", hw=16)
conv2d_case("conv2d_k4s1", 6, 9, 4, 1, 1, hw=9)
conv2d_case("conv2d_k3s2_wide", 7, 6, 3, 2, 1, hw=13)
conv2d_case("conv2d_1x1", 4, 3, 1, 1, 0, hw=6)


def conv_transpose2d_case(name, cin, cout, k, stride, padding, output_padding, bias=True, hw=5):
    @case(name)
    def make():
        m = nn.ConvTranspose2d(cin, cout, k, stride=stride, padding=padding,
                               output_padding=output_padding, bias=bias)
        x = torch.randn(2, cin, hw, hw)
        return run_module(m, x, meta(
            "conv_transpose2d", in_channels=cin, out_channels=cout, kernel_size=k, stride=stride,
            padding=padding, output_padding=output_padding, dilation=1, groups=1, bias=bias))


conv_transpose2d_case("conv_transpose2d", 4, 3, 3, 2, 1, 1)
conv_transpose2d_case("conv_transpose2d_k4", 4, 3, 4, 2, 1, 0)


class SamePadConv2d(nn.Conv2d):
    """efficientnet-pytorch's Conv2dDynamicSamePadding: TensorFlow SAME padding computed
    from each input's size (F.pad, then F.conv2d without padding)."""

    def __init__(self, cin, cout, k, stride, groups, bias):
        super().__init__(cin, cout, k, stride=stride, padding=0, groups=groups, bias=bias)

    def amounts(self, ih, iw):
        kh, kw = self.weight.size()[-2:]
        sh, sw = self.stride
        oh, ow = math.ceil(ih / sh), math.ceil(iw / sw)
        pad_h = max((oh - 1) * sh + (kh - 1) * self.dilation[0] + 1 - ih, 0)
        pad_w = max((ow - 1) * sw + (kw - 1) * self.dilation[1] + 1 - iw, 0)
        return pad_h // 2, pad_w // 2, pad_h - pad_h // 2, pad_w - pad_w // 2

    def forward(self, x):
        top, left, bottom, right = self.amounts(*x.size()[-2:])
        if top or left or bottom or right:
            x = F.pad(x, [left, right, top, bottom])
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def grouped_conv2d_case(name, cin, cout, k, stride, padding, groups, h, w, bias=True, n=2):
    """nn.Conv2d with groups; padding "same" (SamePadConv2d) or a symmetric int."""
    @case(name)
    def make():
        if padding == "same":
            m = SamePadConv2d(cin, cout, k, stride, groups, bias)
            top, left, bottom, right = m.amounts(h, w)
        else:
            m = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, groups=groups, bias=bias)
            top = left = bottom = right = padding
        x = torch.randn(n, cin, h, w)
        return run_module(m, x, meta(
            "grouped_conv2d", in_channels=cin, out_channels=cout, kernel_size=k, stride=stride, padding=padding,
            dilation=1, groups=groups, bias=bias, pad_top=top, pad_left=left, pad_bottom=bottom, pad_right=right))


# EfficientNet-Lite0's convolutions: depthwise k3 / k5, stride 1 / 2, SAME (asymmetric on
# even sizes at stride 2), a channel multiplier, symmetric padding, a plain grouped
# convolution and the stem (groups 1, stride 2, SAME).
grouped_conv2d_case("grouped_conv2d_dw_k3s1_same", 4, 4, 3, 1, "same", 4, 9, 10)
grouped_conv2d_case("grouped_conv2d_dw_k3s2_same_even", 4, 4, 3, 2, "same", 4, 10, 12)
grouped_conv2d_case("grouped_conv2d_dw_k3s2_same_odd", 4, 4, 3, 2, "same", 4, 9, 11)
grouped_conv2d_case("grouped_conv2d_dw_k5s2_same", 3, 3, 5, 2, "same", 3, 13, 10)
grouped_conv2d_case("grouped_conv2d_dw_k5s1_same", 3, 3, 5, 1, "same", 3, 8, 9)
grouped_conv2d_case("grouped_conv2d_dw_mult2", 3, 6, 3, 2, "same", 3, 9, 8)
grouped_conv2d_case("grouped_conv2d_dw_pad1_bias", 4, 4, 3, 1, 1, 4, 7, 6)
grouped_conv2d_case("grouped_conv2d_groups2", 4, 6, 3, 1, 1, 2, 6, 7)
grouped_conv2d_case("grouped_conv2d_stem", 3, 8, 3, 2, "same", 1, 15, 16)


def batchnorm_meta(m):
    return meta("batchnorm", num_features=m.num_features, eps=m.eps, momentum=m.momentum,
                affine=m.affine, track_running_stats=m.track_running_stats)


@case("batchnorm_train")
def batchnorm_train():
    m = nn.BatchNorm2d(4, eps=1e-5, momentum=0.1)
    randomise_affine(m)
    with torch.no_grad():
        m.running_mean.normal_(0.0, 0.5)
        m.running_var.uniform_(0.5, 1.5)
    m.train()
    mean_before = m.running_mean.clone()
    var_before = m.running_var.clone()
    x = torch.randn(2, 4, 6, 6) * 1.5 + 0.3
    t, md = run_module(m, x, batchnorm_meta(m))
    t["buffer.running_mean_before"] = mean_before
    t["buffer.running_var_before"] = var_before
    return t, md


@case("batchnorm_eval")
def batchnorm_eval():
    m = nn.BatchNorm2d(4, eps=1e-5, momentum=0.1)
    randomise_affine(m)
    with torch.no_grad():
        m.running_mean.normal_(0.0, 0.5)
        m.running_var.uniform_(0.5, 1.5)
    m.eval()
    x = torch.randn(2, 4, 6, 6)
    return run_module(m, x, batchnorm_meta(m), buffers_before_forward=True)


def instancenorm_case(name, affine):
    @case(name)
    def make():
        m = nn.InstanceNorm2d(4, eps=1e-5, affine=affine, track_running_stats=False)
        if affine:
            randomise_affine(m)
        x = torch.randn(2, 4, 6, 6) * 2.0 - 0.5
        return run_module(m, x, meta(
            "instancenorm", num_features=4, eps=m.eps, momentum=m.momentum, affine=affine,
            track_running_stats=False))


instancenorm_case("instancenorm", False)
instancenorm_case("instancenorm_affine", True)


def simple_case(name, layer, module, shape, **settings):
    @case(name)
    def make():
        x = torch.randn(*shape)
        return run_module(module(), x, meta(layer, **settings))


simple_case("relu", "relu", nn.ReLU, (2, 3, 6, 6))
simple_case("leaky_relu", "leaky_relu", lambda: nn.LeakyReLU(0.2), (2, 3, 6, 6), negative_slope=0.2)
simple_case("tanh", "tanh", nn.Tanh, (2, 3, 6, 6))
simple_case("sigmoid", "sigmoid", nn.Sigmoid, (2, 3, 6, 6))
simple_case("softmax", "softmax", lambda: nn.Softmax(dim=1), (2, 4, 5, 5), dim=1)
simple_case("softmax_flat", "softmax", lambda: nn.Softmax(dim=1), (2, 10), dim=1)
simple_case("maxpool", "maxpool", lambda: nn.MaxPool2d(3, stride=2, padding=1), (2, 3, 9, 9),
            kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=False)
simple_case("avgpool", "avgpool", lambda: nn.AvgPool2d(2, stride=2), (2, 3, 8, 8),
            kernel_size=2, stride=2, padding=0, ceil_mode=False, count_include_pad=True)
simple_case("adaptive_avgpool", "adaptive_avgpool", lambda: nn.AdaptiveAvgPool2d(1), (2, 4, 7, 7),
            output_size=1)
simple_case("adaptive_avgpool_3", "adaptive_avgpool", lambda: nn.AdaptiveAvgPool2d(3), (2, 4, 7, 7),
            output_size=3)
simple_case("upsample_nearest", "upsample_nearest",
            lambda: nn.Upsample(scale_factor=2, mode="nearest"), (2, 3, 5, 5),
            scale_factor=2, mode="nearest")
simple_case("upsample_bilinear", "upsample_bilinear",
            lambda: nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), (2, 3, 5, 5),
            scale_factor=2, mode="bilinear", align_corners=False)
simple_case("reflection_pad", "reflection_pad", lambda: nn.ReflectionPad2d(3), (2, 3, 6, 6), padding=3)
simple_case("zero_pad", "zero_pad", lambda: nn.ZeroPad2d(1), (2, 3, 5, 5), padding=1)


@case("relu6")
def relu6():
    # Below 0, between, above 6, and exactly at both ends (where the gradient is zero).
    x = torch.randn(2, 3, 6, 6) * 4.0 + 3.0
    x.view(-1)[:4] = torch.tensor([0.0, 6.0, -0.5, 6.5])
    return run_module(nn.ReLU6(), x, meta("relu6"))


@case("linear")
def linear():
    m = nn.Linear(12, 5, bias=True)
    x = torch.randn(2, 12)
    return run_module(m, x, meta("linear", in_features=12, out_features=5, bias=True))


@case("dropout")
def dropout():
    m = nn.Dropout(p=0.5)
    m.train()
    x = torch.randn(2, 3, 6, 6)
    t, md = run_module(m, x, meta("dropout", p=0.5))
    mask = (t["output"] != 0).float()
    assert torch.equal(t["output"], t["input"] * mask / 0.5)
    assert torch.equal(t["grad_input"], t["grad_output"] * mask / 0.5)
    t["buffer.mask"] = mask
    return t, md


@case("add")
def add():
    x, x2 = torch.randn(2, 3, 6, 6), torch.randn(2, 3, 6, 6)
    return run_two_inputs(torch.add, x, x2, meta("add"))


@case("mse_loss")
def mse_loss():
    x, target = torch.randn(2, 3, 5, 5), torch.randn(2, 3, 5, 5)
    return run_loss(lambda a, b: F.mse_loss(a, b, reduction="mean"), x, target,
                    meta("mse_loss", reduction="mean"))


@case("l1_loss")
def l1_loss():
    x, target = torch.randn(2, 3, 5, 5), torch.randn(2, 3, 5, 5)
    return run_loss(lambda a, b: F.l1_loss(a, b, reduction="mean"), x, target,
                    meta("l1_loss", reduction="mean"))


@case("cross_entropy")
def cross_entropy():
    x = torch.randn(4, 6) * 2.0
    target = torch.randint(0, 6, (4,), dtype=torch.int64)
    return run_loss(lambda a, b: F.cross_entropy(a, b, reduction="mean"), x, target,
                    meta("cross_entropy", reduction="mean", ignore_index=-100, label_smoothing=0.0))


def optimizer_case(name, layer, make_optimizer, settings):
    @case(name)
    def make():
        p = nn.Parameter(torch.randn(3, 4))
        grad = torch.randn(3, 4)
        opt = make_optimizer([p])
        t = {"param.before": p.detach().clone(), "grad": grad}
        for step in range(1, 4):
            opt.zero_grad()
            p.grad = grad.clone()
            opt.step()
            t["param.after_%d" % step] = p.detach().clone()
        return t, meta(layer, steps=3, **settings)


optimizer_case("adam_step", "adam",
               lambda ps: torch.optim.Adam(ps, lr=2e-4, betas=(0.5, 0.999), eps=1e-8, weight_decay=0.0),
               dict(lr=2e-4, betas=(0.5, 0.999), beta1=0.5, beta2=0.999, eps=1e-8, weight_decay=0.0,
                    amsgrad=False))
optimizer_case("sgd_step", "sgd",
               lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-4),
               dict(lr=0.1, momentum=0.9, dampening=0.0, weight_decay=1e-4, nesterov=False))


DTYPES = {torch.float32: ("F32", "<f4"), torch.int64: ("I64", "<i8")}


def serialize(tensors, metadata):
    """The safetensors encoding, made deterministic (the `safetensors` package writes the
    metadata in hash-map order): metadata keys and tensor names sorted, data laid out in
    name order, header padded with spaces to a multiple of 8 — the same layout as the
    Swift `SafetensorsFile.encode()`."""
    header = {"__metadata__": dict(sorted(metadata.items()))}
    chunks, offset = [], 0
    for name in sorted(tensors):
        v = tensors[name]
        dtype, np_dtype = DTYPES[v.dtype]
        data = v.detach().cpu().contiguous().numpy().astype(np_dtype).tobytes()
        header[name] = {"dtype": dtype, "shape": list(v.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def write(path, tensors, metadata):
    """Writes atomically; returns False if the file already had exactly these bytes."""
    for k, v in tensors.items():
        if k == "target" and metadata["layer"] == "cross_entropy":
            assert v.dtype == torch.int64, k
        else:
            assert v.dtype == torch.float32, (k, v.dtype)
        assert torch.isfinite(v.float()).all(), k
    blob = serialize(tensors, metadata)

    # Cross-check with the reference implementation.
    loaded = safetensors_load(blob)
    assert sorted(loaded) == sorted(tensors)
    for k, v in tensors.items():
        assert loaded[k].dtype == v.dtype and torch.equal(loaded[k], v.detach()), k

    if os.path.exists(path):
        with open(path, "rb") as f:
            if f.read() == blob:
                return False
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(blob)
    os.replace(tmp, path)
    return True


def prepare_torch():
    """Deterministic, single-threaded float32 PyTorch, as every fixture assumes."""
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)


def write_cases(cases, out_dir, max_file_bytes=None, show=lambda name: True):
    """Runs each (name, make) case with its crc32 seed and writes `<name>.safetensors`
    into out_dir; prints what changed. `show` picks the tensor names to list."""
    os.makedirs(out_dir, exist_ok=True)
    names = [n for n, _ in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    total = 0
    for name, make in cases:
        seed = zlib.crc32(name.encode()) & 0x7FFFFFFF
        torch.manual_seed(seed)
        tensors, metadata = make()
        metadata = dict(metadata)
        metadata.update({"case": name, "seed": str(seed), "torch_version": torch.__version__})
        path = os.path.join(out_dir, name + ".safetensors")
        changed = write(path, tensors, metadata)
        size = os.path.getsize(path)
        if max_file_bytes is not None:
            assert size < max_file_bytes, "%s exceeds %d bytes" % (name, max_file_bytes)
        total += size
        print("%s %s (%d bytes, %d tensors): %s" % (
            "wrote" if changed else "unchanged", os.path.relpath(path, ROOT), size, len(tensors),
            ", ".join("%s%s" % (k, list(v.shape)) for k, v in sorted(tensors.items()) if show(k))))
    print("%d fixtures, %d bytes in total, torch %s" % (len(cases), total, torch.__version__))
    assert total < 1_000_000, "fixtures exceed 1 MB"


def main():
    prepare_torch()
    # Optional arguments: write only the cases whose names start with one of them (every
    # case is seeded by its own name, so a subset gives the same bytes as a full run).
    prefixes = sys.argv[1:]
    cases = [c for c in CASES if not prefixes or any(c[0].startswith(p) for p in prefixes)]
    write_cases(cases, OUT_DIR)


if __name__ == "__main__":
    sys.exit(main())
