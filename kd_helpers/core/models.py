"""Models registered by name. Contract: ``logits, feats = model(x)``.

``feats`` lists intermediate features shallow to deep, the penultimate embedding last.
Inputs are always ``(N, C, H, W)``; MLPs flatten them.

Architectures follow the reference study: MNIST MLPs (Hinton et al. 2015 sizes), the
FitNets thin-deep MLP (Romero et al. 2014), and the CIFAR-10 conv family
``conv(s)-conv(s)-pool-conv(2s)-conv(2s)-pool-FC512-dropout-FC``.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
from typing import Callable

import torch
from torch import nn

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    def deco(fn):
        MODELS[name] = fn
        return fn
    return deco


def create_model(name: str, num_classes: int = 10, **kw) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"Unknown model '{name}'. Available: {', '.join(sorted(MODELS))}")
    model = MODELS[name](num_classes=num_classes, **kw)
    model.arch = name  # recorded with checkpoints so a mismatched teacher is caught by name
    return model


def network_version(model: nn.Module) -> int:
    """The version of what trains a network beyond its layer list, part of a run's identity:
    2 where it has dropout (``models.Dropout``'s 15-bit draws replaced ``nn.Dropout``, so the same
    seed drops other units), else 1."""
    return 2 if any(isinstance(m, Dropout) and m.threshold for m in model.modules()) else 1


@functools.lru_cache(maxsize=None)
def _network_config(name: str) -> str:
    model = create_model(name)
    return json.dumps({"class": type(model).__name__, **getattr(model, "hparams", {}),
                       "version": network_version(model),
                       # every layer and its settings (widths, dropout rates, norms), at the
                       # registry's default input: tells apart any two networks under one name
                       "structure_sha256": hashlib.sha256(repr(model).encode()).hexdigest()[:16]})


def network_config(name: str) -> dict:
    """What a run's config records about its network beyond the registered name: the
    architecture's hyper-parameters (widths, dropout, input dropout, BatchNorm) where the class
    states them, and a digest of its full layer list."""
    return json.loads(_network_config(name))


def load_resized(model: nn.Module, state: dict) -> nn.Module:
    """Load a state dict whose layers are narrower than ``model``'s (structured pruning).

    The saved tensors are the record of the channel counts: every parameter and buffer is
    resized to its saved shape and the layers' size attributes follow, so a pruned network is
    rebuilt from its architecture name and weights alone (no pickled modules)."""
    own = model.state_dict()
    for key, t in state.items():
        if key in own and own[key].shape != t.shape:
            mod_name, _, attr = key.rpartition(".")
            mod = model.get_submodule(mod_name)
            old = getattr(mod, attr)
            new = torch.empty_like(t)
            setattr(mod, attr, nn.Parameter(new, requires_grad=old.requires_grad)
                    if isinstance(old, nn.Parameter) else new)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.out_channels, m.in_channels = m.weight.shape[0], m.weight.shape[1] * m.groups
        elif isinstance(m, nn.Linear):
            m.out_features, m.in_features = m.weight.shape
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.num_features = m.running_mean.shape[0] if m.running_mean is not None else m.weight.shape[0]
    model.load_state_dict(state)
    return model


def is_resized(model: nn.Module, reference: nn.Module) -> bool:
    """Whether any tensor of ``model`` has another shape than in a fresh ``reference``."""
    ref = reference.state_dict()
    return any(k not in ref or ref[k].shape != v.shape for k, v in model.state_dict().items())


def count_params(model: nn.Module, nonzero: bool = False) -> int:
    return sum(int((p != 0).sum()) if nonzero else p.numel() for p in model.parameters())


class Dropout(nn.Module):
    """Inverted dropout that costs less than the matmul it follows on the CPU.

    ``nn.Dropout`` on the CPU draws one Bernoulli sample (a double) per element: on a 256x800
    activation it took longer than the bf16 matmul before it (benchmarks/README.md). Here the
    mask comes from 64-bit random words cut into four 15-bit draws, each compared with a
    threshold: the drop probability is ``round(p * 2^15) / 2^15`` (within 1/65536 of ``p``), and
    kept units are scaled by the exact inverse of the keep probability, so the expected output
    equals the input. The draws come from torch's global generator, which ``fit`` seeds per
    (seed, epoch): runs stay deterministic and resumable. Identity in eval mode; on CUDA it is
    ``F.dropout`` (fast there)."""

    BITS = 15

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"Dropout probability must be in [0, 1), got {p}.")
        self.p = p
        self.threshold = round(p * 2 ** self.BITS)           # draws below it are dropped
        self.keep = 1 - self.threshold / 2 ** self.BITS      # the exact keep probability

    def extra_repr(self) -> str:
        return f"p={self.p}, {self.BITS}-bit draws on the CPU"

    def mask(self, shape, device) -> torch.Tensor:
        """A boolean keep-mask: 4 draws per 64-bit word, the sign bit of each 16-bit lane cleared."""
        n = math.prod(shape)
        words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_()
        draws = words.bitwise_and_(0x7FFF7FFF7FFF7FFF).view(torch.int16)[:n]
        return (draws >= self.threshold).view(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == 0:
            return x
        if x.device.type != "cpu":
            return nn.functional.dropout(x, self.p, True)
        scale = self.mask(x.shape, x.device).to(x.dtype).mul_(1 / self.keep)   # in place: one pass fewer
        return x * scale


class MLP(nn.Module):
    """Fully connected net; ``norm``/``residual`` give the "modified" student variants."""

    def __init__(self, in_features: int, hidden: list[int], num_classes: int, dropout: float = 0.0,
                 norm: bool = False, residual: bool = False, in_dropout: float = 0.0):
        super().__init__()
        self.hparams = {"hidden": list(hidden), "dropout": dropout, "in_dropout": in_dropout, "norm": norm,
                        "residual": residual}
        self.in_drop = Dropout(in_dropout) if in_dropout else nn.Identity()
        self.layers = nn.ModuleList()
        self.residual = residual
        width = in_features
        for h in hidden:
            block = [nn.Linear(width, h)] + ([nn.BatchNorm1d(h)] if norm else []) + [nn.ReLU()]
            block += [Dropout(dropout)] if dropout else []
            self.layers.append(nn.Sequential(*block))
            width = h
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        h = self.in_drop(x.flatten(1))
        feats = []
        for layer in self.layers:
            out = layer(h)
            # a skip connection wherever widths allow it (the "modified" students)
            h = out + h if self.residual and out.shape == h.shape else out
            feats.append(h)
        return self.head(h), feats


class ConvNet(nn.Module):
    """``[conv(w)xd]-pool`` stages, then FC(fc)-dropout-FC or global pooling + FC.

    feats: the output of every stage (spatial maps), then the penultimate embedding.
    """

    def __init__(self, in_channels: int, widths: list[int], num_classes: int, depth: int = 2,
                 fc: int | None = 512, dropout: float = 0.5, image_size: int = 32, norm: bool = False):
        super().__init__()
        self.hparams = {"widths": list(widths), "depth": depth, "fc": fc, "dropout": dropout if fc else 0.0,
                        "norm": norm}
        self.stages = nn.ModuleList()
        c = in_channels
        for w in widths:
            layers = []
            for _ in range(depth):
                layers += [nn.Conv2d(c, w, 3, padding=1)] + ([nn.BatchNorm2d(w)] if norm else []) + [nn.ReLU()]
                c = w
            layers.append(nn.MaxPool2d(2))
            self.stages.append(nn.Sequential(*layers))
        side = image_size // 2 ** len(widths)
        if fc:
            self.embed = nn.Sequential(nn.Flatten(), nn.Linear(c * side * side, fc), nn.ReLU())
            self.head = nn.Sequential(Dropout(dropout), nn.Linear(fc, num_classes))
        else:  # thin-deep nets: global pooling keeps the parameter count small
            self.embed = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.head = nn.Linear(c, num_classes)

    def forward(self, x):
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        emb = self.embed(x)
        feats.append(emb)
        return self.head(emb), feats

    def classify_map(self, x):
        """Logits from the last stage's map: the layers after it (SRD's frozen teacher tail)."""
        return self.head(self.embed(x))


def _flat(shape) -> int:
    c, h, w = shape
    return c * h * w


# ---- MNIST (28x28x1)
@register_model("mlp_teacher")
def mlp_teacher(num_classes=10, in_shape=(1, 28, 28), **kw):
    """784-1200-1200-10 (~2.39M params) with the dropout of Hinton et al. (2012, 2015): 20% on the
    input, 50% on the hidden units. Chosen on validation accuracy over dropout 0.2 on the hidden
    units only (``mlp_teacher_d02``), see the protocol ablation in notebooks/01_teacher."""
    return MLP(_flat(in_shape), [1200, 1200], num_classes, dropout=kw.pop("dropout", 0.5),
               in_dropout=kw.pop("in_dropout", 0.2), **kw)


@register_model("mlp_teacher_d02")
def mlp_teacher_d02(num_classes=10, in_shape=(1, 28, 28), **kw):
    """The earlier teacher: 784-1200-1200-10, dropout 0.2 on the hidden units (protocol ablation)."""
    return MLP(_flat(in_shape), [1200, 1200], num_classes, dropout=0.2, **kw)


@register_model("mlp_student")
def mlp_student(num_classes=10, in_shape=(1, 28, 28), **kw):
    """784-800-800-10 (~1.28M params) with dropout 10% on the input and 30% on the hidden units.

    Chosen on validation accuracy (full MNIST, seed 0, cosine lr: 98.68%) over no dropout
    (Hinton et al. 2015's unregularised student, ``mlp_student_nodrop``: 98.45%), 20% on the
    hidden units (98.58%) and the teacher's 20%/50% (98.53%); see notebooks/01_teacher."""
    return MLP(_flat(in_shape), [800, 800], num_classes, dropout=kw.pop("dropout", 0.3),
               in_dropout=kw.pop("in_dropout", 0.1), **kw)


@register_model("mlp_student_nodrop")
def mlp_student_nodrop(num_classes=10, in_shape=(1, 28, 28), **kw):
    """784-800-800-10 without dropout, as in the reference study (protocol ablation)."""
    return MLP(_flat(in_shape), [800, 800], num_classes, **kw)


@register_model("mlp_student_mod")
def mlp_student_mod(num_classes=10, in_shape=(1, 28, 28), **kw):
    """The "modified" student: 784-800-800-10 with BatchNorm and a residual connection."""
    return MLP(_flat(in_shape), [800, 800], num_classes, norm=True, residual=True, **kw)


@register_model("mlp_fitnet")
def mlp_fitnet(num_classes=10, in_shape=(1, 28, 28), **kw):
    """FitNets thin-deep student 784-300x4-10 (~0.51M); its 2nd hidden layer is the guided layer."""
    return MLP(_flat(in_shape), [300] * 4, num_classes, **kw)


@register_model("mlp_fitnet_mod")
def mlp_fitnet_mod(num_classes=10, in_shape=(1, 28, 28), **kw):
    return MLP(_flat(in_shape), [300] * 4, num_classes, norm=True, residual=True, **kw)


# ---- CIFAR (32x32x3)
@register_model("cnn_teacher")
def cnn_teacher(num_classes=10, in_shape=(3, 32, 32), **kw):
    """Conv family with scale s=64 and BatchNorm after every conv (~4.46M params): conv + BN + pool
    + dropout as one of the reference CNN studies describes it; chosen on validation accuracy over
    the plain family (``cnn_teacher_nobn``) in the protocol ablation (notebooks/01_teacher)."""
    return ConvNet(in_shape[0], [64, 128], num_classes, image_size=in_shape[1], norm=kw.pop("norm", True), **kw)


@register_model("cnn_student")
def cnn_student(num_classes=10, in_shape=(3, 32, 32), **kw):
    """Conv family with scale s=16 and BatchNorm (~1.07M params)."""
    return ConvNet(in_shape[0], [16, 32], num_classes, image_size=in_shape[1], norm=kw.pop("norm", True), **kw)


@register_model("cnn_teacher_nobn")
def cnn_teacher_nobn(num_classes=10, in_shape=(3, 32, 32), **kw):
    """The reference study's teacher without normalisation (protocol ablation)."""
    return ConvNet(in_shape[0], [64, 128], num_classes, image_size=in_shape[1], **kw)


@register_model("cnn_student_nobn")
def cnn_student_nobn(num_classes=10, in_shape=(3, 32, 32), **kw):
    """The reference study's student without normalisation (protocol ablation; the CNN family's
    "modified" student row, since the study's student has BatchNorm)."""
    return ConvNet(in_shape[0], [16, 32], num_classes, image_size=in_shape[1], **kw)


@register_model("cnn_fitnet")
def cnn_fitnet(num_classes=10, in_shape=(3, 32, 32), **kw):
    """Thin-deep FitNets student: 3 stages x 3 convs (16/32/48) with BatchNorm, global pooling (~0.085M).

    Without normalisation this 9-conv plain net stayed at chance under KD on the quick CIFAR-10
    run (measured); BN costs 576 parameters.
    """
    return ConvNet(in_shape[0], [16, 32, 48], num_classes, depth=3, fc=None, image_size=in_shape[1],
                   norm=kw.pop("norm", True), **kw)
