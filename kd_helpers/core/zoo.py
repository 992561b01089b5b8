"""The residual networks of the other reference studies, registered by name with the
``(logits, feats)`` contract: ``feats`` = the output of every stage (spatial maps), then the
pooled embedding; ``model.head`` is the classifier on that embedding (SRD borrows it).

- CIFAR ResNets (He et al. 2016, as in RepDistiller / CRD, Tian et al. 2020): ``resnet8`` ...
  ``resnet110`` (16/32/64 channels) and the x4 variants ``resnet8x4``/``resnet32x4``;
  torchvision's ``BasicBlock``.
- Wide ResNets ``wrn_<depth>_<k>`` (Zagoruyko & Komodakis 2016): pre-activation blocks, which
  torchvision lacks, written out below.
- VGG8/11/13 with BatchNorm (Simonyan & Zisserman 2015, CIFAR variant of RepDistiller).
- MobileNetV2 (Sandler et al. 2018) from torchvision's ``InvertedResidual`` blocks, with the
  first two strides set to 1 for 32x32 inputs.
- ResNet-18/34/50 (torchvision) with a CIFAR stem (3x3 conv, no max-pool) below 64x64 inputs
  and the standard stem (7x7/2 conv + max-pool) from 64x64 up.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models import mobilenet_v2, resnet
from torchvision.models.mobilenetv2 import InvertedResidual

from .models import Dropout, register_model


class Staged(nn.Module):
    """stem -> stages (each output is a feature) -> pool -> embedding (a feature) -> head."""

    def __init__(self, stem: nn.Module, stages: list[nn.Module], width: int, num_classes: int,
                 post: nn.Module | None = None, dropout: float = 0.0):
        super().__init__()
        self.hparams = {"stages": len(stages), "width": width, "dropout": dropout}
        self.stem, self.stages = stem, nn.ModuleList(stages)
        self.post = post or nn.Identity()   # e.g. the final BN-ReLU of pre-activation nets
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(Dropout(dropout), nn.Linear(width, num_classes)) if dropout else nn.Linear(width, num_classes)

    def forward(self, x):
        x, feats = self.stem(x), []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i == len(self.stages) - 1:
                x = self.post(x)
            feats.append(x)
        emb = self.pool(x)
        feats.append(emb)
        return self.head(emb), feats

    def classify_map(self, x):
        """Logits from the last stage's map (after ``post``): SRD's frozen teacher tail."""
        return self.head(self.pool(x))


def _conv_bn(cin, cout, k=3, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _init(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


# ---- CIFAR ResNets
def _res_stage(block, cin: int, cout: int, n: int, stride: int) -> nn.Sequential:
    down = None
    if stride != 1 or cin != cout * block.expansion:
        down = nn.Sequential(nn.Conv2d(cin, cout * block.expansion, 1, stride, bias=False),
                             nn.BatchNorm2d(cout * block.expansion))
    layers = [block(cin, cout, stride, down)]
    layers += [block(cout * block.expansion, cout) for _ in range(n - 1)]
    return nn.Sequential(*layers)


def cifar_resnet(depth: int, widths=(16, 16, 32, 64), num_classes=10, in_shape=(3, 32, 32)) -> Staged:
    """ResNet-<depth> for CIFAR: 3x3 stem, three stages of (depth-2)/6 basic blocks."""
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
    n = (depth - 2) // 6
    stem = _conv_bn(in_shape[0], widths[0])
    stages, c = [], widths[0]
    for i, w in enumerate(widths[1:]):
        stages.append(_res_stage(resnet.BasicBlock, c, w, n, 1 if i == 0 else 2))
        c = w
    return _init(Staged(stem, stages, c, num_classes))


for _d in (8, 14, 20, 32, 44, 56, 110):
    register_model(f"resnet{_d}")(lambda num_classes=10, in_shape=(3, 32, 32), _d=_d, **kw:
                                   cifar_resnet(_d, num_classes=num_classes, in_shape=in_shape))
for _d in (8, 32):
    register_model(f"resnet{_d}x4")(lambda num_classes=10, in_shape=(3, 32, 32), _d=_d, **kw:
                                     cifar_resnet(_d, (32, 64, 128, 256), num_classes, in_shape))


# ---- Wide ResNets
class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 with a 1x1 conv shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.short = None if cin == cout and stride == 1 else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        o = torch.relu(self.bn1(x))
        y = self.conv2(torch.relu(self.bn2(self.conv1(o))))
        return y + (x if self.short is None else self.short(o))


def wide_resnet(depth: int, k: int, num_classes=10, in_shape=(3, 32, 32)) -> Staged:
    """WRN-<depth>-<k>: three stages of (depth-4)/6 pre-activation blocks, 16k/32k/64k channels."""
    if (depth - 4) % 6:
        raise ValueError(f"WRN depth must be 6n+4, got {depth}")
    n, c = (depth - 4) // 6, 16
    stem = nn.Conv2d(in_shape[0], 16, 3, 1, 1, bias=False)
    stages = []
    for i, w in enumerate((16 * k, 32 * k, 64 * k)):
        stages.append(nn.Sequential(*[PreActBlock(c if j == 0 else w, w, (1 if i == 0 else 2) if j == 0 else 1)
                                      for j in range(n)]))
        c = w
    return _init(Staged(stem, stages, c, num_classes, post=nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True))))


for _d, _k in ((16, 1), (16, 2), (16, 4), (16, 8), (28, 10), (40, 1), (40, 2), (40, 4)):
    register_model(f"wrn_{_d}_{_k}")(lambda num_classes=10, in_shape=(3, 32, 32), _d=_d, _k=_k, **kw:
                                     wide_resnet(_d, _k, num_classes, in_shape))


# ---- VGG with BatchNorm (CIFAR: five blocks, max-pool between them, global pooling, one FC)
_VGG = {8: [[64], [128], [256], [512], [512]],
        11: [[64], [128], [256, 256], [512, 512], [512, 512]],
        13: [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]]}


def vgg(depth: int, num_classes=10, in_shape=(3, 32, 32)) -> Staged:
    stages, c = [], in_shape[0]
    for i, block in enumerate(_VGG[depth]):
        layers = [nn.MaxPool2d(2)] if i else []
        for w in block:
            layers.append(_conv_bn(c, w))
            c = w
        stages.append(nn.Sequential(*layers))
    return _init(Staged(nn.Identity(), stages, c, num_classes))


for _d in _VGG:
    register_model(f"vgg{_d}")(lambda num_classes=10, in_shape=(3, 32, 32), _d=_d, **kw:
                               vgg(_d, num_classes, in_shape))


# ---- MobileNetV2
@register_model("mobilenetv2")
def mobilenetv2(num_classes=10, in_shape=(3, 32, 32), width: float = 1.0, **kw) -> Staged:
    """torchvision's MobileNetV2 blocks; below 64x64 inputs the stem and the second stage keep
    the resolution (stride 1), as CIFAR re-implementations do. Stages end where it halves."""
    small = in_shape[1] < 64
    settings = [[1, 16, 1, 1], [6, 24, 2, 1 if small else 2], [6, 32, 3, 2], [6, 64, 4, 2],
                [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]
    feats = mobilenet_v2(width_mult=width, inverted_residual_setting=settings).features
    stem = feats[0]
    if small:
        stem[0].stride = (1, 1)
    blocks = list(feats[1:])
    stages, current = [], []
    for b in blocks:   # a new stage starts at every stride-2 block; the last 1x1 conv closes the last
        if isinstance(b, InvertedResidual) and b.stride == 2 and current:
            stages.append(nn.Sequential(*current))
            current = []
        current.append(b)
    stages.append(nn.Sequential(*current))
    return Staged(stem, stages, blocks[-1][0].out_channels, num_classes, dropout=0.2)


# ---- ResNet-18/34/50 (torchvision)
def torchvision_resnet(name: str, num_classes=10, in_shape=(3, 32, 32)) -> Staged:
    net = getattr(resnet, name)(num_classes=num_classes)
    if in_shape[1] < 64:   # CIFAR stem: 3x3 conv, stride 1, no max-pool
        stem = _conv_bn(in_shape[0], 64)
    else:
        if in_shape[0] != 3:
            net.conv1 = nn.Conv2d(in_shape[0], 64, 7, 2, 3, bias=False)
        stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    return Staged(stem, [net.layer1, net.layer2, net.layer3, net.layer4], net.fc.in_features, num_classes)


for _n in ("resnet18", "resnet34", "resnet50"):
    register_model(_n)(lambda num_classes=10, in_shape=(3, 32, 32), _n=_n, **kw:
                       torchvision_resnet(_n, num_classes, in_shape))
