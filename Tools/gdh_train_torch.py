#!/usr/bin/env python3
"""The PyTorch reference of the GDH trainer (`gdh train`), in the spirit of llm.c.

It computes exactly the objective of Docs/training.md, section "The objective, step by
step", with the networks of Tools/make_network_fixtures.py (the same tensor names as the
Swift networks), and reads/writes gdh-index model files through Tools/gdh_torch.py.

    pip install "torch==2.13.0+cpu" safetensors numpy pillow   # torch from the local wheels

    # the fixture that pins the Swift trainer's first 10 steps
    python3 Tools/gdh_train_torch.py fixture --out Tests/TrainingTests/Fixtures/train_steps.safetensors

    # a full training on a plain-layout dataset (DIR/images/<class>/*, DIR/sketches/<class>/*)
    python3 Tools/gdh_train_torch.py train --data DIR --split SPLIT.json --out MODEL.safetensors \
        [--epochs 30 --batch 32 --seed 1 --bits 64 --config small --device cpu|cuda --threads N \
         --no-generator --no-cycle --no-adversarial --detach-hash --log-every 10]

    # EfficientNet-Lite0 as H (gdh train --hashnet lite0 ...): ImageNet start (needs
    # bash Tools/setup_lite0.sh) or random, backbone at 0.1 x H's rate, stem + 2 stages fixed
    python3 Tools/gdh_train_torch.py train ... --hashnet lite0 --image-size 128 --init imagenet \
        --backbone-lr-scale 0.1 --freeze-stages 2       # or --config lite0 (= small + lite0, 128 px)

    # time training steps on random data
    python3 Tools/gdh_train_torch.py bench --config small --batch 32 --threads 1 --steps 5

The fixture's contents are listed in Tests/TrainingTests/Fixtures/README.md.

Readings of Docs/training.md where it leaves a choice (the Swift trainer follows the same):

* Forward calls of one full step, in this order (BatchNorm in train mode everywhere,
  running statistics updated per call): G_I(x_S), G_S(fake_I), D_I(fake_I),
  H(cat[x_I, fake_I]), G_S(x_I), G_I(fake_S), D_S(fake_S); then the discriminator step's
  D_I(x_I), D_I(p_I), D_S(x_S), D_S(p_S).
* The generator step's backward reaches D_I and D_S too; those gradients are discarded
  (D's parameters are not in the generator Adam and D's gradients are zero before the
  discriminator backward). Adam of G_I, G_S, H steps before the discriminator step; the
  discriminator step uses the fakes of this step's forward (made by G before its update).
* n(i) scans j = (i+1) % B, (i+2) % B, ..., (i+B-1) % B (i itself excluded) and takes the
  first with y_I[j] != y_S[i]. d(a, b) is the mean over bits; L_tri is the mean over all
  B rows (rows without a negative contribute 0 but still count in 1/B).
* Means are over every element: mean((h_I - b_I)^2) over B*bits, the adversarial terms
  over the whole (B, 1, h, w) patch map, the cycle terms over B*3*S*S.
* The pool is queried with the detached fakes of the current step, image by image in
  batch order; a returned image is a detached copy; the pool holds 50 images.
* --no-cycle: G_S(fake_I) and G_I(fake_S) (the reconstructions) are not computed at all,
  so they do not update BatchNorm running statistics either; fake_S = G_S(x_I) is still
  made when the adversarial term needs it. --no-adversarial: no D call, no D step, no pool.
  --no-generator: only H (its own Adam); h = H(cat[x_I, x_S]). Dropped terms are logged 0.
* Rounding: L = round(S * 286 / 256) and D = max(1, round(E / 6)) round half away from
  zero (Swift's `rounded()`), not Python's half-to-even: D(E=15) = 3.
* Images are resized to L x L (both axes, no aspect preservation), then cropped at
  (x0, y0) uniform in [0, L - S] and flipped with probability 1/2.
* Target codes: H_I, H_S (most recent H outputs) start at 0 for every item; an item not
  drawn in an epoch keeps its previous value; when a sketch appears twice in a batch the
  later row wins. The D-step and B-step run after every epoch, in float64, sign(0) = +1.
* Steps per epoch: floor(N / B) batches (the last partial batch is dropped), at least one
  (then B = N). Photos of a class without training sketches are left out.
* --no-generator models are written with an untrained G_I (the file format always has one)
  and "noGenerator": true in the config JSON, without G_I (sketches go straight into H).

The lite0 hashing network (--hashnet lite0 or --config lite0; gdh_torch.Lite0HashNet: the
package efficientnet-lite-pytorch's EfficientNet-Lite0 with `bits` outputs, its state_dict
names under H., input [-1, 1] mapped by the fixed x * 127.5/128 + 0.5/128 to the weights'
(p - 127) / 128; no dropout, no drop-connect), as `gdh train` (Sources/gdh/Train.swift,
Sources/Training/TrainStep.swift) does it:
* --hashnet lite0 on a non-lite0 --config without --image-size sets imageSize 128 (the
  lite0 configuration's); --image-size N overrides imageSize (lite0: a multiple of 32);
  --hashnet resnet writes no hashNet key. hashWidths/hashBlocks stay in the config, unused.
* --init random: init_hash's rule on every tensor of H, which is what the Swift
  `TrainingInit` does by tensor name and rank: conv weights (also the depthwise ones)
  Kaiming normal std sqrt(2 / fan_out), fan_out = shape[0] * kh * kw (PyTorch's fan_out
  ignores groups, as Swift's formula does); BatchNorm weight 1, bias 0 (running statistics
  0 and 1, as constructed); _fc weight N(0, 0.01), bias 0. (Same distributions; the
  random streams differ: Swift draws from SplitMix64.)
* --init imagenet (the default for lite0): the same random init first (so _fc is
  N(0, 0.01), bias 0), then every tensor but _fc.* (BatchNorm running statistics included)
  from --backbone (default Tools/models/efficientnet-lite0-imagenet.safetensors, written by
  bash Tools/setup_lite0.sh), each required with its shape.
* --backbone-lr-scale F (default 0.1): H's Adam has two groups, the backbone (every
  parameter but _fc) at lr * hash-lr-factor * F and _fc at lr * hash-lr-factor.
* --freeze-stages K (0-7, default 0): for K > 0 the stem (_conv_stem, _bn0) and the blocks
  of the first K of the 7 stages (1, 2, 2, 3, 3, 4, 1 blocks) are left out of the optimiser
  (requires_grad False; gradients still flow through them to G_I) and their BatchNorms stay
  in eval mode (running statistics fixed) whatever train() is called with.
The ResNet paths are unchanged (one Adam group for H; `fixture` writes the same tensors).
"""

import argparse
import copy
import json
import math
import os
import random
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

TOOLS = os.path.dirname(os.path.abspath(__file__))
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)
import gdh_torch  # noqa: E402
import make_fixtures  # noqa: E402

ROOT = os.path.dirname(TOOLS)

LR = 2e-4
BETAS = (0.5, 0.999)
ADAM_EPS = 1e-8
LAMBDA_CYC = 10.0
LAMBDA_PAIR = 1.0
LAMBDA_TRI = 1.0
MARGIN = 1.0
LAMBDA_HASH = 1.0
NU = 0.1
POOL_SIZE = 50
POOL_SEED_I = 101
POOL_SEED_S = 202
COLUMNS = ["L_G", "L_adv_I", "L_adv_S", "L_cyc_S", "L_cyc_I", "L_hash", "L_tri", "L_D_I", "L_D_S"]
NETWORKS = ("G_I", "G_S", "D_I", "D_S", "H")
MASK64 = (1 << 64) - 1


def round_half_away(x):
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


# ---------------------------------------------------------------------------
# Configurations
# ---------------------------------------------------------------------------

def tiny_config(bits=32):
    return {"name": "tiny", "imageSize": 32, "bits": bits, "ngf": 4, "generatorBlocks": 1,
            "norm": "batch", "attention": True, "ndf": 4, "hashWidths": [4, 8, 8, 8],
            "hashBlocks": [1, 1, 1, 1], "resize": "area"}


def named_config(name, bits, hashnet=None, image_size=None):
    """The named configuration; `hashnet` ("resnet" | "lite0") and `image_size` as
    gdh train's --hashnet and --image-size set them."""
    if name == "tiny":
        c = tiny_config(bits)
    else:
        c = gdh_torch.named_config(name, bits)
    if hashnet is not None:
        if hashnet == "lite0" and gdh_torch.hash_net_kind(c) != "lite0" and image_size is None:
            c["imageSize"] = gdh_torch.lite0_config(bits)["imageSize"]
        if hashnet == "resnet":
            c.pop("hashNet", None)
        else:
            c["hashNet"] = hashnet
    if image_size is not None:
        c["imageSize"] = image_size
    p = gdh_torch.config_problem(c)
    if p:
        raise SystemExit("bad model configuration: " + p)
    return c


DEFAULT_BACKBONE = os.path.join(TOOLS, "models", "efficientnet-lite0-imagenet.safetensors")


# ---------------------------------------------------------------------------
# Initial weights (Docs/training.md, "Initial weights")
# ---------------------------------------------------------------------------

def init_gan(net):
    """G and D: convolutions (also transposed, also the attention 1x1) N(0, 0.02) with zero
    bias; BatchNorm weight N(1, 0.02), bias 0. Modules in named_modules() order."""
    with torch.no_grad():
        for _, m in net.named_modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)


def init_hash(net):
    """H: convolutions Kaiming normal (fan_out, relu gain, as torchvision's ResNet),
    BatchNorm weight 1 and bias 0, the linear head N(0, 0.01) with zero bias."""
    with torch.no_grad():
        for _, m in net.named_modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)


def load_backbone(net, path):
    """ImageNet weights into a lite0 H: every tensor but _fc.* from a gdh-index backbone file
    (Tools/convert_lite0.py), each present with the network's shape; _fc keeps its init."""
    metadata, tensors = gdh_torch.read_file(path)
    if metadata.get("format") != "gdh-index-backbone" or metadata.get("backbone") != "efficientnet-lite0":
        raise SystemExit("%s is not an efficientnet-lite0 backbone file (bash Tools/setup_lite0.sh makes one)" % path)
    own = net.state_dict()
    state, problems = {}, []
    for name, v in own.items():
        if not gdh_torch.lite0_backbone_name(name) or name.endswith("num_batches_tracked"):
            state[name] = v
            continue
        t = tensors.get(name)
        if t is None:
            problems.append("missing %s" % name)
        elif tuple(t.shape) != tuple(v.shape):
            problems.append("%s has shape %s, expected %s" % (name, list(t.shape), list(v.shape)))
        else:
            state[name] = t.to(torch.float32)
    problems += ["unexpected %s" % k for k in sorted(tensors) if k not in own]
    if problems:
        raise SystemExit("backbone %s does not fit EfficientNet-Lite0: %s" % (path, "; ".join(problems[:8])))
    net.load_state_dict(state, strict=True)
    return net


def make_networks(config, names=NETWORKS, init="random", backbone=None, freeze_stages=0):
    """Each network constructed (PyTorch default init draws) and then initialised, in the
    order G_I, G_S, D_I, D_S, H, from the current torch RNG. Train mode. A lite0 H with
    init "imagenet" then gets the backbone tensors of `backbone`; `freeze_stages` fixes its
    stem and first stages (no gradients, BatchNorm in eval mode)."""
    nets = {}
    lite0 = gdh_torch.hash_net_kind(config) == "lite0"
    for p in names:
        net = gdh_torch.build_network(p, config)
        (init_hash if p == "H" else init_gan)(net)
        if p == "H" and lite0:
            if init == "imagenet":
                load_backbone(net, backbone or DEFAULT_BACKBONE)
            net.frozen_stages = freeze_stages
            for m in net.frozen_modules():
                m.requires_grad_(False)
        nets[p] = net.train()
    return nets


# ---------------------------------------------------------------------------
# The image pool
# ---------------------------------------------------------------------------

class SplitMix64:
    def __init__(self, seed):
        self.state = seed & MASK64

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)


class ImagePool:
    """CycleGAN's pool with a SplitMix64 both sides implement."""

    def __init__(self, seed, size=POOL_SIZE):
        self.rng = SplitMix64(seed)
        self.size = size
        self.images = []

    def query_index(self, new):
        """One image: the image the pool returns for `new` (which it may store)."""
        if len(self.images) < self.size:
            self.images.append(new)
            return new
        u = self.rng.next() >> 40
        if u < (1 << 23):
            k = self.rng.next() % self.size
            old = self.images[k]
            self.images[k] = new
            return old
        return new

    def query(self, batch):
        batch = batch.detach()
        return torch.stack([self.query_index(batch[i].clone()) for i in range(batch.shape[0])])


# ---------------------------------------------------------------------------
# The hash loss
# ---------------------------------------------------------------------------

def negatives(y_I, y_S):
    """n(i): the first j after i (cyclically, i excluded) with y_I[j] != y_S[i], or -1."""
    yi, ys = [int(v) for v in y_I.tolist()], [int(v) for v in y_S.tolist()]
    b = len(yi)
    out = []
    for i in range(b):
        n = -1
        for k in range(1, b):
            j = (i + k) % b
            if yi[j] != ys[i]:
                n = j
                break
        out.append(n)
    return out


def hash_loss(h_I, h_S, b_I, b_S, y_I, y_S):
    """(L_hash, L_tri) of step 4."""
    B = h_I.shape[0]
    n = negatives(y_I, y_S)
    valid = torch.tensor([v >= 0 for v in n], dtype=h_I.dtype, device=h_I.device)
    idx = torch.tensor([max(v, 0) for v in n], dtype=torch.long, device=h_I.device)
    d_pos = ((h_S - h_I) ** 2).mean(dim=1)
    d_neg = ((h_S - h_I[idx]) ** 2).mean(dim=1)
    L_tri = (torch.clamp(MARGIN + d_pos - d_neg, min=0.0) * valid).sum() / B
    L_hash = (((h_I - b_I) ** 2).mean() + ((h_S - b_S) ** 2).mean()
              + LAMBDA_PAIR * ((h_I - h_S) ** 2).mean() + LAMBDA_TRI * L_tri)
    return L_hash, L_tri


# ---------------------------------------------------------------------------
# One training step
# ---------------------------------------------------------------------------

class Trainer:
    def __init__(self, nets, seed, no_generator=False, no_cycle=False, no_adversarial=False,
                 detach_hash=False, lr=LR, hash_lr_factor=1.0, backbone_lr_scale=None, adam_eps=ADAM_EPS):
        """backbone_lr_scale (lite0 H only): H's backbone learns at that multiple of H's rate,
        its head _fc at H's rate; frozen parameters (requires_grad False) are left out."""
        self.nets = nets
        self.hash_lr_factor = hash_lr_factor
        self.no_generator = no_generator
        self.cycle = not no_cycle and not no_generator
        self.adversarial = not no_adversarial and not no_generator
        self.detach_hash = detach_hash
        for net in nets.values():
            net.train()
        # Two parameter groups: the generators at the schedule's rate, H at hash_lr_factor
        # times it (Adam is per parameter, so with factor 1 this is one optimiser).
        if backbone_lr_scale is None:
            groups = [{"params": list(nets["H"].parameters()), "lr": lr * hash_lr_factor, "factor": hash_lr_factor}]
        else:
            named = [(k, v) for k, v in nets["H"].named_parameters() if v.requires_grad]
            f = hash_lr_factor * backbone_lr_scale
            groups = [{"params": [v for k, v in named if gdh_torch.lite0_backbone_name(k)], "lr": lr * f, "factor": f},
                      {"params": [v for k, v in named if not gdh_torch.lite0_backbone_name(k)],
                       "lr": lr * hash_lr_factor, "factor": hash_lr_factor}]
        if not no_generator:
            groups.append({"params": [p for k in ("G_I", "G_S") for p in nets[k].parameters()], "lr": lr, "factor": 1.0})
        self.opt_G = torch.optim.Adam(groups, lr=lr, betas=BETAS, eps=adam_eps, weight_decay=0.0)
        self.opt_D = None
        if self.adversarial:
            d_params = [p for k in ("D_I", "D_S") for p in nets[k].parameters()]
            self.opt_D = torch.optim.Adam(d_params, lr=lr, betas=BETAS, eps=adam_eps, weight_decay=0.0)
            self.pool_I = ImagePool(seed + POOL_SEED_I)
            self.pool_S = ImagePool(seed + POOL_SEED_S)

    def set_lr(self, lr):
        for opt in (self.opt_G, self.opt_D):
            if opt is not None:
                for g in opt.param_groups:
                    g["lr"] = lr * g.get("factor", 1.0)

    def _set_d_grad(self, on):
        for k in ("D_I", "D_S"):
            self.nets[k].requires_grad_(on)

    def step(self, x_I, x_S, y_I, y_S, b_I, b_S):
        """One step. Returns (losses as a dict of 0-dim tensors computed before the update,
        h_I, h_S detached)."""
        n = self.nets
        B = x_I.shape[0]
        zero = x_I.new_zeros(())
        L = {k: zero for k in COLUMNS}
        if self.no_generator:
            h = n["H"](torch.cat([x_I, x_S], 0))
            h_I, h_S = h[:B], h[B:]
            L["L_hash"], L["L_tri"] = hash_loss(h_I, h_S, b_I, b_S, y_I, y_S)
            L["L_G"] = LAMBDA_HASH * L["L_hash"]
            self.opt_G.zero_grad(set_to_none=True)
            L["L_G"].backward()
            self.opt_G.step()
            return {k: v.detach() for k, v in L.items()}, h_I.detach(), h_S.detach()

        if self.adversarial:
            self._set_d_grad(False)  # the G step's gradients of D would be discarded anyway
        # 1.
        fake_I = n["G_I"](x_S)
        if self.cycle:
            rec_S = n["G_S"](fake_I)
            L["L_cyc_S"] = LAMBDA_CYC * (rec_S - x_S).abs().mean()
        # 2.
        if self.adversarial:
            L["L_adv_I"] = ((n["D_I"](fake_I) - 1.0) ** 2).mean()
        # 3.
        h = n["H"](torch.cat([x_I, fake_I.detach() if self.detach_hash else fake_I], 0))
        h_I, h_S = h[:B], h[B:]
        # 4.
        L["L_hash"], L["L_tri"] = hash_loss(h_I, h_S, b_I, b_S, y_I, y_S)
        # 5.
        fake_S = None
        if self.cycle or self.adversarial:
            fake_S = n["G_S"](x_I)
        if self.cycle:
            rec_I = n["G_I"](fake_S)
            L["L_cyc_I"] = LAMBDA_CYC * (rec_I - x_I).abs().mean()
        if self.adversarial:
            L["L_adv_S"] = ((n["D_S"](fake_S) - 1.0) ** 2).mean()
        # 6.
        L["L_G"] = L["L_adv_I"] + L["L_adv_S"] + L["L_cyc_S"] + L["L_cyc_I"] + LAMBDA_HASH * L["L_hash"]
        self.opt_G.zero_grad(set_to_none=True)
        L["L_G"].backward()
        self.opt_G.step()

        if self.adversarial:
            self._set_d_grad(True)
            # 7.
            p_I = self.pool_I.query(fake_I)
            p_S = self.pool_S.query(fake_S)
            # 8.
            d_real_I, d_fake_I = n["D_I"](x_I), n["D_I"](p_I)
            d_real_S, d_fake_S = n["D_S"](x_S), n["D_S"](p_S)
            L["L_D_I"] = 0.5 * (((d_real_I - 1.0) ** 2).mean() + (d_fake_I ** 2).mean())
            L["L_D_S"] = 0.5 * (((d_real_S - 1.0) ** 2).mean() + (d_fake_S ** 2).mean())
            self.opt_D.zero_grad(set_to_none=True)
            (L["L_D_I"] + L["L_D_S"]).backward()
            self.opt_D.step()
        return {k: v.detach() for k, v in L.items()}, h_I.detach(), h_S.detach()


def loss_row(L, columns=COLUMNS):
    return [float(L[k]) for k in columns]


# ---------------------------------------------------------------------------
# Target codes
# ---------------------------------------------------------------------------

def update_codes(labels_I, labels_S, B_I, B_S, H_I, H_S, classes):
    """The D-step and B-step after an epoch (float64). labels: long (N,); B, H: (N, bits).
    Returns the new (B_I, B_S) as float32 in {-1, +1}."""
    bits = B_I.shape[1]
    lI, lS = labels_I.cpu().long(), labels_S.cpu().long()
    num = torch.zeros(classes, bits, dtype=torch.float64)
    num.index_add_(0, lI, B_I.cpu().double())
    num.index_add_(0, lS, B_S.cpu().double())
    count = torch.bincount(lI, minlength=classes) + torch.bincount(lS, minlength=classes)
    D = num / (count.double() + 1.0).unsqueeze(1)

    def sign(v):
        return torch.where(v >= 0, 1.0, -1.0).to(torch.float32)

    new_I = sign(D[lI] + NU * H_I.cpu().double())
    new_S = sign(D[lS] + NU * H_S.cpu().double())
    return new_I.to(B_I.device), new_S.to(B_S.device)


# ---------------------------------------------------------------------------
# fixture
# ---------------------------------------------------------------------------

def cmd_fixture(args):
    make_fixtures.prepare_torch()
    seed, B, steps, lr = 7, 4, 10, LR
    config = tiny_config(32)
    bits, S, classes = config["bits"], config["imageSize"], 3
    torch.manual_seed(seed)
    nets = make_networks(config)
    initial = {p: copy.deepcopy(net.state_dict()) for p, net in nets.items()}
    batches = []
    for _ in range(steps):
        x_I = torch.rand(B, 3, S, S) * 2.0 - 1.0
        x_S = torch.rand(B, 3, S, S) * 2.0 - 1.0
        y_I = torch.randint(0, classes, (B,))
        y_S = y_I.clone()
        b_I = torch.randint(0, 2, (B, bits)).float() * 2.0 - 1.0
        b_S = torch.randint(0, 2, (B, bits)).float() * 2.0 - 1.0
        batches.append((x_I, x_S, y_I.float(), y_S.float(), b_I, b_S))

    tensors = {}
    for p in NETWORKS:
        for k, v in gdh_torch.state_tensors(nets[p]).items():
            tensors["%s.%s" % (p, k)] = v

    def fresh(names=NETWORKS):
        out = {}
        for p in names:
            net = gdh_torch.build_network(p, config)
            net.load_state_dict(initial[p])
            out[p] = net.train()
        return out

    def run(trainer, columns):
        rows = []
        for x_I, x_S, y_I, y_S, b_I, b_S in batches:
            L, _, _ = trainer.step(x_I, x_S, y_I, y_S, b_I, b_S)
            rows.append(loss_row(L, columns))
        return torch.tensor(rows, dtype=torch.float32)

    full = Trainer(fresh(), seed)
    tensors["losses"] = run(full, COLUMNS)
    for name in ("H.fc.weight", "G_I.conv1.weight", "D_I.conv1.weight", "G_I.conv1_norm.running_mean"):
        p, k = name.split(".", 1)
        tensors["final." + name] = full.nets[p].state_dict()[k].detach().clone()
    tensors["losses_nogen"] = run(Trainer(fresh(("H",)), seed, no_generator=True), ["L_hash", "L_tri"])
    tensors["losses_detach"] = run(Trainer(fresh(), seed, detach_hash=True), COLUMNS)
    for t, (x_I, x_S, y_I, y_S, b_I, b_S) in enumerate(batches):
        for k, v in (("x_I", x_I), ("x_S", x_S), ("y_I", y_I), ("y_S", y_S), ("b_I", b_I), ("b_S", b_S)):
            tensors["step%d.%s" % (t, k)] = v

    # Extras, for the parts that 10 steps of B = 4 do not reach (the pool fills at 50):
    # pool.returned: a pool of seed 7 + 101 queried with 120 images whose values are their
    # ids 0..119, four per batch; the id returned for each.
    pool = ImagePool(seed + POOL_SEED_I)
    ids = torch.arange(120, dtype=torch.float32).view(30, 4, 1)
    tensors["pool.returned"] = torch.cat([pool.query(ids[i]) for i in range(30)]).view(120)
    # codes.*: one D-step + B-step on 7 photos and 5 sketches of 3 classes.
    g = torch.Generator().manual_seed(seed)
    lI = torch.tensor([0, 1, 2, 0, 1, 0, 2])
    lS = torch.tensor([2, 0, 1, 1, 0])
    cB_I = torch.randint(0, 2, (7, bits), generator=g).float() * 2 - 1
    cB_S = torch.randint(0, 2, (5, bits), generator=g).float() * 2 - 1
    cH_I = torch.randn(7, bits, generator=g)
    cH_S = torch.randn(5, bits, generator=g)
    cH_S[2].zero_()  # a sketch never drawn: H = 0 (sign(0) = +1 where class 1's code sum is 0)
    nI, nS = update_codes(lI, lS, cB_I, cB_S, cH_I, cH_S, 3)
    tensors.update({"codes.y_I": lI.float(), "codes.y_S": lS.float(), "codes.B_I": cB_I,
                    "codes.B_S": cB_S, "codes.H_I": cH_I, "codes.H_S": cH_S,
                    "codes.new_B_I": nI, "codes.new_B_S": nS})

    # hashloss.*: L_hash and L_tri on outputs far from 0 (in the 10 steps h is near 0, so
    # L_tri stays near the margin), labels with y_S != y_I, some hinges inactive; with
    # the gradients of L_hash.
    hy_I = torch.tensor([0, 0, 1, 1, 2, 0])
    hy_S = torch.tensor([0, 1, 1, 2, 0, 0])
    hh_I = torch.randn(6, bits, generator=g) * 1.5
    hh_S = torch.randn(6, bits, generator=g) * 1.5
    hh_S[0::2] = hh_I[0::2] + 0.1 * torch.randn(3, bits, generator=g)
    hb_I = torch.randint(0, 2, (6, bits), generator=g).float() * 2 - 1
    hb_S = torch.randint(0, 2, (6, bits), generator=g).float() * 2 - 1
    a, b = hh_I.clone().requires_grad_(True), hh_S.clone().requires_grad_(True)
    lh, lt = hash_loss(a, b, hb_I, hb_S, hy_I.float(), hy_S.float())
    lh.backward()
    tensors.update({"hashloss.y_I": hy_I.float(), "hashloss.y_S": hy_S.float(),
                    "hashloss.h_I": hh_I, "hashloss.h_S": hh_S, "hashloss.b_I": hb_I,
                    "hashloss.b_S": hb_S, "hashloss.negatives": torch.tensor(negatives(hy_I, hy_S)).float(),
                    "hashloss.L_hash": lh.detach().view(1), "hashloss.L_tri": lt.detach().view(1),
                    "hashloss.grad_h_I": a.grad, "hashloss.grad_h_S": b.grad})

    metadata = {
        "config": gdh_torch.model_metadata(config)["config"],
        "seed": str(seed), "batch": str(B), "steps": str(steps), "lr": repr(lr),
        "lambda_pair": repr(LAMBDA_PAIR), "lambda_tri": repr(LAMBDA_TRI), "margin": repr(MARGIN),
        "lambda_hash": repr(LAMBDA_HASH), "lambda_cyc": repr(LAMBDA_CYC), "nu": repr(NU),
        "betas": "0.5,0.999", "eps": repr(ADAM_EPS), "pool_size": str(POOL_SIZE),
        "columns": ",".join(COLUMNS), "columns_nogen": "L_hash,L_tri",
        "torch_version": torch.__version__,
        "command": "python3 Tools/gdh_train_torch.py fixture --out " + os.path.relpath(args.out, ROOT),
    }
    for k, v in tensors.items():
        assert torch.isfinite(v).all(), k
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    changed = make_fixtures.write(out, tensors, metadata)
    size = os.path.getsize(out)
    assert size < 1_258_291, size  # 1.2 MiB
    print("%s %s (%d bytes, %d tensors)" % ("wrote" if changed else "unchanged",
                                            os.path.relpath(out, ROOT), size, len(tensors)))
    torch.set_printoptions(precision=6, linewidth=200, sci_mode=False)
    print("columns:", ",".join(COLUMNS))
    print("losses:\n", tensors["losses"])
    print("losses_nogen:\n", tensors["losses_nogen"])
    print("losses_detach:\n", tensors["losses_detach"])
    return 0


def formula(shape, a, b):
    """sin(a * i + b) over the flat index i, in float64, rounded to float32: inputs the
    Swift test computes the same way, so the fixture need not store them."""
    n = 1
    for d in shape:
        n *= d
    return torch.sin(torch.arange(n, dtype=torch.float64) * a + b).to(torch.float32).view(*shape)


LITE0_FIXTURE = {"bits": 32, "size": 64, "batch": 4, "steps": 3, "hash_lr_factor": 10.0,
                 "backbone_lr_scale": 0.1, "freeze_stages": 1, "adam_eps": 1e-4}


def cmd_fixture_lite0(args):
    """Three no-generator steps of a lite0 H started from the ImageNet backbone (64 px, 32
    bits, batch 4, H lr factor 10, backbone lr x 0.1, stem + stage 0 frozen, Adam eps 1e-4):
    the losses and some tensors after the steps. The large eps keeps weights whose gradient
    is float noise from moving by +-lr (Adam's first steps are g/|g|). The tensors are
    stored after step 0 (the tight check of the gradients) and after the last step. Later
    steps are ill-conditioned (batch-4 BatchNorm over 2x2 planes): this PyTorch run in
    float32 differs from the same run in float64 by 5e-4 in step 2's L_hash and by up to
    2.3e-4 in backbone weights, so the Swift test allows more there. _fc, the batches and the target codes are formulas
    (see `formula`); the backbone is Tools/models/efficientnet-lite0-imagenet.safetensors."""
    make_fixtures.prepare_torch()
    P = LITE0_FIXTURE
    bits, S, B = P["bits"], P["size"], P["batch"]
    config = named_config("small", bits, "lite0", S)
    nets = make_networks(config, ("H",), init="imagenet", freeze_stages=P["freeze_stages"])
    H = nets["H"]
    with torch.no_grad():
        H._fc.weight.copy_(formula((bits, 1280), 0.731, 0.2) * 0.05)
        H._fc.bias.copy_(formula((bits,), 1.37, 0.5) * 0.05)
    trainer = Trainer(nets, 7, no_generator=True, hash_lr_factor=P["hash_lr_factor"],
                      backbone_lr_scale=P["backbone_lr_scale"], adam_eps=P["adam_eps"])
    rows = []
    y = torch.tensor([0, 1, 0, 1], dtype=torch.float32)
    for t in range(P["steps"]):
        x_I = formula((B, 3, S, S), 0.37, 1.3 * t)
        x_S = formula((B, 3, S, S), 0.53, 1.3 * t + 0.5)
        b_I = torch.sign(formula((B, bits), 0.91, t) + 1e-3)
        b_S = torch.sign(formula((B, bits), 0.67, t + 0.25) + 1e-3)
        L, _, _ = trainer.step(x_I, x_S, y, y, b_I, b_S)
        rows.append([float(L["L_hash"]), float(L["L_tri"])])
        if t == 0:
            after0 = {k: v.detach().clone().contiguous() for k, v in H.state_dict().items()}
    tensors = {"losses": torch.tensor(rows, dtype=torch.float32)}
    sd = H.state_dict()
    for k in ("_fc.weight", "_fc.bias", "_conv_stem.weight", "_blocks.0._depthwise_conv.weight",
              "_blocks.3._depthwise_conv.weight", "_blocks.3._bn1.running_mean", "_blocks.1._project_conv.weight",
              "_bn1.running_var", "_bn1.weight"):
        tensors["final." + k] = sd[k].detach().clone().contiguous()
        tensors["after0." + k] = after0[k]
    metadata = {"config": gdh_torch.model_metadata(config)["config"], "torch_version": torch.__version__,
                "command": "python3 Tools/gdh_train_torch.py fixture-lite0 --out " + os.path.relpath(args.out, ROOT)}
    metadata.update({k: repr(v) for k, v in P.items()})
    out = os.path.abspath(args.out)
    make_fixtures.write(out, tensors, metadata)
    print("wrote %s (%d bytes); losses %s" % (os.path.relpath(out, ROOT), os.path.getsize(out), rows))
    return 0


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------

def open_rgb(path):
    """8-bit RGB, alpha composited over white (as the Swift decoder)."""
    from PIL import Image
    im = Image.open(path)
    im.load()
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return im.convert("RGB")


def load_image(path, L, resize):
    from PIL import Image
    import numpy as np
    im = open_rgb(path)
    filt = Image.BOX if resize == "area" else Image.BILINEAR
    if im.size != (L, L):
        im = im.resize((L, L), filt)
    a = np.asarray(im, dtype=np.uint8).copy()
    return torch.from_numpy(a).permute(2, 0, 1).contiguous()  # (3, L, L) uint8


def split_items(split, *keys):
    for k in keys:
        if k in split:
            return split[k]
    raise SystemExit("split file lacks %s" % " / ".join(keys))


def item_path_label(item):
    if isinstance(item, str):  # "images/<class>/file"
        parts = item.split("/")
        return item, parts[-2]
    return item["path"], item.get("label", item.get("class"))


def load_split_data(data_dir, split_path, config, log):
    with open(split_path) as f:
        split = json.load(f)
    if split.get("format", "gdh-index-split") != "gdh-index-split":
        raise SystemExit("%s is not a gdh-index split (format %r)" % (split_path, split.get("format")))
    photos = [item_path_label(i) for i in split_items(split, "trainPhotos", "train_photos")]
    sketches = [item_path_label(i) for i in split_items(split, "trainSketches", "train_sketches")]
    classes = split.get("classes") or sorted({l for _, l in photos + sketches})
    index = {c: k for k, c in enumerate(classes)}
    S = config["imageSize"]
    L = round_half_away(S * 286 / 256)
    t0 = time.time()

    def load(items):
        imgs = torch.stack([load_image(os.path.join(data_dir, p), L, config["resize"]) for p, _ in items])
        labels = torch.tensor([index[l] for _, l in items], dtype=torch.long)
        return imgs, labels

    P, lP = load(photos)
    Sk, lS = load(sketches)
    log("loaded %d training photos and %d training sketches of %d classes at %dx%d in %.1f s"
        % (len(photos), len(sketches), len(classes), L, L, time.time() - t0))
    return P, lP, Sk, lS, classes


def augment(cache, idx, S, rng):
    """Random S x S crops, flipped with probability 1/2, scaled to [-1, 1] (float32)."""
    L = cache.shape[-1]
    out = torch.empty(len(idx), 3, S, S, dtype=torch.float32)
    for n, i in enumerate(idx):
        y0, x0 = rng.randint(0, L - S), rng.randint(0, L - S)
        crop = cache[i, :, y0:y0 + S, x0:x0 + S]
        if rng.random() < 0.5:
            crop = crop.flip(-1)
        out[n] = crop.float()
    return out.div_(255.0).sub_(0.5).div_(0.5)


def lr_at(epoch, epochs, base=LR):
    decay = max(1, round_half_away(epochs / 6))
    return base * min(1.0, (epochs - epoch) / (decay + 1))


def save_trained(path, config, nets, no_generator):
    cpu = {p: copy.deepcopy(net).cpu().eval() for p, net in nets.items()}
    if no_generator:
        # A no-generator model file holds H only ("noGenerator": true in its config).
        gdh_torch.save_model(path, dict(config, noGenerator=True), None, cpu["H"])
    else:
        gdh_torch.save_model(path, config, cpu["G_I"], cpu["H"], cpu["G_S"], cpu["D_I"], cpu["D_S"])


def cmd_train(args):
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device")
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    config = named_config(args.config, args.bits, args.hashnet, args.image_size)
    S, bits = config["imageSize"], config["bits"]
    lite0 = gdh_torch.hash_net_kind(config) == "lite0"

    def log(msg):
        print(msg, flush=True)

    P, lP, Sk, lS, classes = load_split_data(args.data, args.split, config, log)
    K = len(classes)
    by_class = [[] for _ in range(K)]
    for j, c in enumerate(lS.tolist()):
        by_class[c].append(j)
    usable = [i for i, c in enumerate(lP.tolist()) if by_class[c]]
    if len(usable) < len(lP):
        log("left out %d photos of classes without training sketches" % (len(lP) - len(usable)))
    if not usable:
        raise SystemExit("no training photo has a training sketch of its class")
    B = min(args.batch, len(usable))
    steps_per_epoch = max(1, len(usable) // B)

    names = ("H",) if args.no_generator else NETWORKS
    nets = {p: n.to(device) for p, n in make_networks(config, names, **lite0_options(args, config)).items()}
    trainer = Trainer(nets, args.seed, no_generator=args.no_generator, no_cycle=args.no_cycle,
                      no_adversarial=args.no_adversarial, detach_hash=args.detach_hash,
                      hash_lr_factor=args.hash_lr_factor,
                      backbone_lr_scale=args.backbone_lr_scale if lite0 else None)
    # Target codes: one random code per class (seeded), every item starts at its class's.
    g = torch.Generator().manual_seed(args.seed)
    class_codes = torch.randint(0, 2, (K, bits), generator=g).float() * 2 - 1
    B_I, B_S = class_codes[lP].clone(), class_codes[lS].clone()
    H_I, H_S = torch.zeros(len(lP), bits), torch.zeros(len(lS), bits)

    rng = random.Random(args.seed)
    csv_path = args.out + ".losses.csv"
    csv = open(csv_path, "w")
    csv.write("epoch,step,lr," + ",".join(COLUMNS) + "\n")
    log("training %s (%d bits, %d px%s) on %s: %d epochs of %d steps, batch %d%s"
        % (config["name"], bits, S,
           ", H lite0 from %s weights, backbone lr x%g, %d stages frozen"
           % (args.init, args.backbone_lr_scale, args.freeze_stages) if lite0 else "",
           device, args.epochs, steps_per_epoch, B,
           "".join(" --" + f.replace("_", "-") for f in ("no_generator", "no_cycle", "no_adversarial", "detach_hash")
                   if getattr(args, f))))
    t_start, step = time.time(), 0
    for epoch in range(args.epochs):
        lr = lr_at(epoch, args.epochs)
        trainer.set_lr(lr)
        order = list(usable)
        rng.shuffle(order)
        for t in range(steps_per_epoch):
            pi = order[t * B:(t + 1) * B]
            si = [rng.choice(by_class[int(lP[i])]) for i in pi]
            x_I = augment(P, pi, S, rng).to(device)
            x_S = augment(Sk, si, S, rng).to(device)
            y_I, y_S = lP[pi].float().to(device), lS[si].float().to(device)
            b_I, b_S = B_I[pi].to(device), B_S[si].to(device)
            L, h_I, h_S = trainer.step(x_I, x_S, y_I, y_S, b_I, b_S)
            h_I, h_S = h_I.cpu(), h_S.cpu()
            for r, i in enumerate(pi):
                H_I[i] = h_I[r]
            for r, j in enumerate(si):
                H_S[j] = h_S[r]
            row = loss_row(L)
            csv.write("%d,%d,%.6g,%s\n" % (epoch, step, lr, ",".join("%.6f" % v for v in row)))
            step += 1
            if step % args.log_every == 0 or step == 1:
                el = time.time() - t_start
                log("epoch %d step %d/%d lr %.3g | %s | %.2f s/step"
                    % (epoch, step, args.epochs * steps_per_epoch, lr,
                       " ".join("%s %.4f" % (k, v) for k, v in zip(COLUMNS, row)), el / step))
        csv.flush()
        B_I, B_S = update_codes(lP, lS, B_I, B_S, H_I, H_S, K)
        save_trained(args.out, config, nets, args.no_generator)
        log("epoch %d done (%.0f s): target codes updated, model written to %s"
            % (epoch, time.time() - t_start, args.out))
    csv.close()
    log("losses in %s" % csv_path)
    return 0


# ---------------------------------------------------------------------------
# bench
# ---------------------------------------------------------------------------

def cmd_bench(args):
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    config = named_config(args.config, args.bits, args.hashnet, args.image_size)
    S, bits, B = config["imageSize"], config["bits"], args.batch
    lite0 = gdh_torch.hash_net_kind(config) == "lite0"
    names = ("H",) if args.no_generator else NETWORKS
    nets = {p: n.to(device) for p, n in make_networks(config, names, **lite0_options(args, config)).items()}
    trainer = Trainer(nets, args.seed, no_generator=args.no_generator, no_cycle=args.no_cycle,
                      no_adversarial=args.no_adversarial, detach_hash=args.detach_hash,
                      hash_lr_factor=getattr(args, "hash_lr_factor", 1.0),
                      backbone_lr_scale=args.backbone_lr_scale if lite0 else None)

    def batch():
        y = torch.randint(0, 10, (B,)).float()
        return (torch.rand(B, 3, S, S, device=device) * 2 - 1, torch.rand(B, 3, S, S, device=device) * 2 - 1,
                y.to(device), y.to(device),
                (torch.randint(0, 2, (B, bits)).float() * 2 - 1).to(device),
                (torch.randint(0, 2, (B, bits)).float() * 2 - 1).to(device))

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(2):
        trainer.step(*batch())
    sync()
    batches = [batch() for _ in range(args.steps)]
    t0 = time.perf_counter()
    for b in batches:
        L, _, _ = trainer.step(*b)
    float(L["L_G"])
    sync()
    dt = (time.perf_counter() - t0) / args.steps
    row = {"config": config["name"], "batch": B, "threads": args.threads, "device": str(device),
           "steps": args.steps, "ms_per_step": round(dt * 1000, 1),
           "images_per_s": round(2 * B / dt, 2), "torch": torch.__version__}
    if lite0:
        row.update(hashNet="lite0", image_size=S, init=args.init, freeze_stages=args.freeze_stages)
    print(json.dumps(row))
    return 0


# ---------------------------------------------------------------------------

def lite0_options(args, config):
    """make_networks' lite0 arguments from the command line (none for the ResNet)."""
    if not args.backbone_lr_scale >= 0:
        raise SystemExit("--backbone-lr-scale must be >= 0")
    if gdh_torch.hash_net_kind(config) != "lite0":
        return {}  # --init, --backbone, --freeze-stages are ignored for the ResNet (as by gdh train)
    return {"init": args.init, "backbone": args.backbone, "freeze_stages": args.freeze_stages}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fixture", help="write the 10-step fixture of the Swift trainer")
    f.add_argument("--out", default=os.path.join(ROOT, "Tests", "TrainingTests", "Fixtures", "train_steps.safetensors"))

    def common(p):
        p.add_argument("--config", default="small", choices=["small", "paper", "tiny", "lite0"])
        p.add_argument("--hashnet", choices=["resnet", "lite0"], default=None,
                       help="the hashing network (default: the configuration's; lite0 = EfficientNet-Lite0)")
        p.add_argument("--image-size", type=int, default=None,
                       help="input size (default: the configuration's; --hashnet lite0 alone sets 128)")
        p.add_argument("--init", choices=["imagenet", "random"], default="imagenet",
                       help="lite0: start the backbone from ImageNet weights or from init_hash's random rule")
        p.add_argument("--backbone", default=None,
                       help="lite0: the ImageNet weights (default Tools/models/efficientnet-lite0-imagenet.safetensors)")
        p.add_argument("--backbone-lr-scale", type=float, default=0.1,
                       help="lite0: the backbone's learning rate as a multiple of H's (_fc gets H's)")
        p.add_argument("--freeze-stages", type=int, default=0, choices=range(0, 8), metavar="K",
                       help="lite0: the stem and the first K of the 7 stages get no updates, BatchNorm in eval mode")
        p.add_argument("--bits", type=int, default=64)
        p.add_argument("--batch", type=int, default=32)
        p.add_argument("--seed", type=int, default=1)
        p.add_argument("--device", default="cpu")
        p.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1))
        for flag in ("--no-generator", "--no-cycle", "--no-adversarial", "--detach-hash"):
            p.add_argument(flag, action="store_true")

    fl = sub.add_parser("fixture-lite0", help="write the lite0 fixture of the Swift trainer")
    fl.add_argument("--out", default=os.path.join(ROOT, "Tests", "TrainingTests", "Fixtures", "train_steps_lite0.safetensors"))
    t = sub.add_parser("train", help="train a model on a plain-layout dataset")
    t.add_argument("--data", required=True)
    t.add_argument("--split", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--hash-lr-factor", type=float, default=1.0,
                   help="H's learning rate as a multiple of the schedule's (gdh train --hash-lr-factor)")
    t.add_argument("--log-every", type=int, default=10)
    common(t)
    b = sub.add_parser("bench", help="time training steps on random data")
    b.add_argument("--steps", type=int, default=5)
    common(b)
    args = ap.parse_args(argv)
    if args.cmd == "fixture":
        return cmd_fixture(args)
    if args.cmd == "fixture-lite0":
        return cmd_fixture_lite0(args)
    if args.cmd == "train":
        return cmd_train(args)
    return cmd_bench(args)


if __name__ == "__main__":
    sys.exit(main())
