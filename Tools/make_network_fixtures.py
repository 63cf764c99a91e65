#!/usr/bin/env python3
"""PyTorch reference fixtures for the Swift GDH networks (generator, hash net, discriminator).

Run from the repository root:

    python3 Tools/make_network_fixtures.py

It writes one safetensors file per case into Tests/GDHTests/Fixtures/ and prints each
file it wrote. Conventions are those of Tools/make_fixtures.py, whose deterministic
encoder and atomic writer (`make_fixtures.write`) are reused, so the output is
byte-identical across runs:

* float32, NCHW, CPU, `torch.use_deterministic_algorithms(True)`, one thread.
* `torch.manual_seed(0)` once, then `torch.manual_seed(seed)` at the start of every
  case with seed = crc32(case name) & 0x7FFFFFFF (metadata "seed"). Random draws in a
  case happen in this order: network construction (PyTorch default init, modules in
  registration order), norm-layer randomisation (modules in `named_modules()` order:
  weight ~ U(0.5, 1.5), bias ~ N(0, 0.1), running_mean ~ N(0, 0.1),
  running_var ~ U(0.5, 1.5)), the input (~ U(-1, 1)), then `grad_output`.
* x (requires_grad) -> y = net(x); g = randn_like(y); (y * g).sum().backward().

Tensor names
------------
    input            x
    output           y = net(x)
    grad_output      g
    grad_input       dL/dx with L = sum(y * g)
    param.<name>     every parameter AND float buffer of the network by its state_dict
                     name (num_batches_tracked skipped), as loaded BEFORE the forward
                     (train-mode batch norm updates the running statistics in place;
                     these are the values before that update)
    grad.<name>      gradients of a few selected parameters (see CASES)
    buffer.<name>    hashnet_small_train only: bn1's running statistics AFTER the forward

Metadata: "network" (generator | hashnet | discriminator), "mode" (eval | train),
"case", "seed", "torch_version" and the constructor settings as strings
(generator: ngf n_blocks norm attention; hashnet: widths "4,8,8,16", blocks "1,1,1,1",
bits; discriminator: ndf norm).

The architecture contract is documented in Tests/GDHTests/Fixtures/README.md.
"""

import os
import sys
import zlib

import torch
import torch.nn as nn
import torch.nn.functional as F

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TOOLS)
import make_fixtures  # noqa: E402  (deterministic safetensors encoder / writer)

ROOT = os.path.dirname(TOOLS)
OUT_DIR = os.path.join(ROOT, "Tests", "GDHTests", "Fixtures")


# ---------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------

def make_norm(norm, c):
    if norm == "batch":
        return nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)
    if norm == "instance":
        return nn.InstanceNorm2d(c, affine=False, track_running_stats=False)
    raise ValueError("unknown norm %r" % norm)


class ResnetBlock(nn.Module):
    def __init__(self, channels, norm):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 0, bias=True)
        self.conv1_norm = make_norm(norm, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 0, bias=True)
        self.conv2_norm = make_norm(norm, channels)

    def forward(self, x):
        h = F.pad(x, (1, 1, 1, 1), "reflect")
        h = F.relu(self.conv1_norm(self.conv1(h)))
        h = F.pad(h, (1, 1, 1, 1), "reflect")
        h = self.conv2_norm(self.conv2(h))
        return x + h


class Generator(nn.Module):
    """Sketch -> image (3 -> 3 channels)."""

    def __init__(self, ngf, n_blocks, norm, attention):
        super().__init__()
        self.attention = attention
        self.conv1 = nn.Conv2d(3, ngf, 7, 1, 0, bias=True)
        self.conv1_norm = make_norm(norm, ngf)
        self.conv2 = nn.Conv2d(ngf, ngf * 2, 3, 2, 1, bias=True)
        self.conv2_norm = make_norm(norm, ngf * 2)
        self.conv3 = nn.Conv2d(ngf * 2, ngf * 4, 3, 2, 1, bias=True)
        self.conv3_norm = make_norm(norm, ngf * 4)
        self.resnet_blocks = nn.Sequential(*[ResnetBlock(ngf * 4, norm) for _ in range(n_blocks)])
        if attention:
            self.attention1 = nn.Conv2d(ngf * 4, 1, 1, 1, 0, bias=True)
        self.deconv1 = nn.ConvTranspose2d(ngf * 4, ngf * 2, 3, 2, 1, 1, bias=True)
        self.deconv1_norm = make_norm(norm, ngf * 2)
        self.deconv2 = nn.ConvTranspose2d(ngf * 2, ngf, 3, 2, 1, 1, bias=True)
        self.deconv2_norm = make_norm(norm, ngf)
        self.deconv3 = nn.Conv2d(ngf, 3, 7, 1, 0, bias=True)

    def forward(self, input):
        x = F.pad(input, (3, 3, 3, 3), "reflect")
        x = F.relu(self.conv1_norm(self.conv1(x)))
        x = F.relu(self.conv2_norm(self.conv2(x)))
        x = F.relu(self.conv3_norm(self.conv3(x)))
        x = self.resnet_blocks(x)
        if self.attention:
            m = torch.sigmoid(self.attention1(x))  # (N, 1, H, W)
            x = x * m
        x = F.relu(self.deconv1_norm(self.deconv1(x)))
        x = F.relu(self.deconv2_norm(self.deconv2(x)))
        x = F.pad(x, (3, 3, 3, 3), "reflect")
        return torch.tanh(self.deconv3(x))


class BasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, 0, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = self.downsample(x) if self.downsample is not None else x
        return self.relu(out + identity)


class HashNet(nn.Module):
    """torchvision-style ResNet with BasicBlocks; fc outputs `bits` real values."""

    def __init__(self, widths, blocks, bits):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = widths[0]
        for k in range(4):
            layer = []
            for j in range(blocks[k]):
                stride = 2 if (k > 0 and j == 0) else 1
                layer.append(BasicBlock(inplanes, widths[k], stride))
                inplanes = widths[k]
            setattr(self, "layer%d" % (k + 1), nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], bits, bias=True)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


class Discriminator(nn.Module):
    """70x70 PatchGAN."""

    def __init__(self, ndf, norm):
        super().__init__()
        self.conv1 = nn.Conv2d(3, ndf, 4, 2, 1, bias=True)
        self.conv2 = nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=True)
        self.conv2_norm = make_norm(norm, ndf * 2)
        self.conv3 = nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=True)
        self.conv3_norm = make_norm(norm, ndf * 4)
        self.conv4 = nn.Conv2d(ndf * 4, ndf * 8, 4, 1, 1, bias=True)
        self.conv4_norm = make_norm(norm, ndf * 8)
        self.conv5 = nn.Conv2d(ndf * 8, 1, 4, 1, 1, bias=True)

    def forward(self, input):
        x = F.leaky_relu(self.conv1(input), 0.2)
        x = F.leaky_relu(self.conv2_norm(self.conv2(x)), 0.2)
        x = F.leaky_relu(self.conv3_norm(self.conv3(x)), 0.2)
        x = F.leaky_relu(self.conv4_norm(self.conv4(x)), 0.2)
        return self.conv5(x)


# ---------------------------------------------------------------------------
# Fixture machinery
# ---------------------------------------------------------------------------

def randomise_norms(net):
    """Non-trivial affine parameters and running statistics for every norm layer."""
    with torch.no_grad():
        for _, m in net.named_modules():
            if isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)):
                if m.affine:
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_(0.0, 0.1)
                if m.track_running_stats:
                    m.running_mean.normal_(0.0, 0.1)
                    m.running_var.uniform_(0.5, 1.5)


def state_tensors(net):
    """Parameters and float buffers by state_dict name (num_batches_tracked skipped)."""
    out = {}
    for name, v in net.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        assert v.is_floating_point(), name
        out[name] = v.detach().clone()
    return out


def run_network(net, mode, input_shape, grad_names, buffers_after=()):
    randomise_norms(net)
    net.train(mode == "train")
    before = state_tensors(net)
    x = (torch.rand(*input_shape) * 2.0 - 1.0).requires_grad_(True)
    y = net(x)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    t = {"input": x, "output": y, "grad_output": g, "grad_input": x.grad}
    for name, v in before.items():
        t["param." + name] = v
    params = dict(net.named_parameters())
    for name in grad_names:
        t["grad." + name] = params[name].grad
    after = net.state_dict()
    for name in buffers_after:
        t["buffer." + name] = after[name].detach().clone()
    if mode == "eval":  # eval must not touch the running statistics
        for name, v in before.items():
            assert torch.equal(after[name], v), name
    return {k: v.detach() for k, v in t.items()}


def s(v):
    return make_fixtures.s(v)


CASES, case = make_fixtures.case_registry()


def generator_case(name, ngf, n_blocks, norm, attention, mode, input_shape, grad_names):
    @case(name)
    def make():
        net = Generator(ngf, n_blocks, norm, attention)
        t = run_network(net, mode, input_shape, grad_names)
        md = {"network": "generator", "mode": mode, "ngf": s(ngf), "n_blocks": s(n_blocks),
              "norm": norm, "attention": s(attention)}
        return t, md


generator_case("generator_small_batch_eval", 4, 2, "batch", True, "eval", (1, 3, 32, 32),
               ["conv1.weight", "resnet_blocks.0.conv1.weight", "attention1.weight",
                "deconv1.weight", "deconv3.bias"])
generator_case("generator_small_instance_train", 4, 1, "instance", False, "train", (2, 3, 16, 16),
               ["conv1.weight", "resnet_blocks.0.conv2.weight", "deconv2.weight", "deconv3.weight"])

HASH_WIDTHS, HASH_BLOCKS, HASH_BITS = [4, 8, 8, 16], [1, 1, 1, 1], 32
HASH_GRADS = ["conv1.weight", "layer2.0.downsample.0.weight", "fc.weight", "fc.bias"]


def hashnet_case(name, mode, input_shape, buffers_after=()):
    @case(name)
    def make():
        net = HashNet(HASH_WIDTHS, HASH_BLOCKS, HASH_BITS)
        t = run_network(net, mode, input_shape, HASH_GRADS, buffers_after)
        md = {"network": "hashnet", "mode": mode, "widths": s(HASH_WIDTHS),
              "blocks": s(HASH_BLOCKS), "bits": s(HASH_BITS)}
        return t, md


hashnet_case("hashnet_small_eval", "eval", (2, 3, 32, 32))
hashnet_case("hashnet_small_train", "train", (4, 3, 32, 32),
             buffers_after=["bn1.running_mean", "bn1.running_var"])


@case("discriminator_small_train")
def discriminator_small_train():
    net = Discriminator(4, "batch")
    t = run_network(net, "train", (2, 3, 32, 32), ["conv1.weight", "conv5.bias"])
    return t, {"network": "discriminator", "mode": "train", "ndf": "4", "norm": "batch"}


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------

def check_resnet18_names():
    """HashNet([64,128,256,512], [2,2,2,2], bits) must have torchvision resnet18's
    state_dict names and shapes (fc's shape aside) and compute the same function."""
    try:
        import torchvision
    except ImportError:
        print("torchvision is not installed: skipped the resnet18 state_dict check")
        return
    rng = torch.get_rng_state()
    ours = HashNet([64, 128, 256, 512], [2, 2, 2, 2], 48)
    ref = torchvision.models.resnet18()
    ref.fc = nn.Linear(512, 48)
    a, b = ours.state_dict(), ref.state_dict()
    assert list(a) == list(b), sorted(set(a) ^ set(b))
    for k in a:
        assert a[k].shape == b[k].shape, k
    randomise_norms(ours)
    ref.load_state_dict(ours.state_dict())
    ours.eval(), ref.eval()
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 64)
        assert torch.allclose(ours(x), ref(x), atol=1e-5)
    torch.set_rng_state(rng)
    print("HashNet matches torchvision %s resnet18 (names, shapes, eval output)" % torchvision.__version__)


def main():
    make_fixtures.prepare_torch()
    check_resnet18_names()
    make_fixtures.write_cases(CASES, OUT_DIR, max_file_bytes=200_000, show=lambda k: not k.startswith("param."))


if __name__ == "__main__":
    sys.exit(main())
