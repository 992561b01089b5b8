"""The loss contract shared by every method."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

LOSSES: dict[str, type["DistillLoss"]] = {}


def register_loss(name: str):
    def deco(cls):
        cls.name = name
        LOSSES[name] = cls
        return cls
    return deco


@dataclass
class Pair:
    """What a loss may know about the networks it connects (feature shapes per sample)."""

    num_classes: int
    s_shapes: list[tuple[int, ...]]
    t_shapes: list[tuple[int, ...]] | None = None
    teacher: nn.Module | None = None                        # frozen; SRD borrows its classifier
    make_student: Callable[[], nn.Module] | None = None     # fresh copies for DML peers


@torch.no_grad()
def describe_pair(student: nn.Module, teacher: nn.Module | None, in_shape, num_classes: int,
                  make_student: Callable[[], nn.Module] | None = None) -> Pair:
    """Probe both networks once with a dummy batch to learn their feature shapes."""
    x = torch.zeros(2, *in_shape, device=next(student.parameters()).device)

    def shapes(model):
        was = model.training
        model.eval()
        _, feats = model(x)
        model.train(was)
        return [tuple(f.shape[1:]) for f in feats]
    return Pair(num_classes, shapes(student), shapes(teacher) if teacher is not None else None,
                teacher, make_student)


class DistillLoss(nn.Module):
    """Base class: subclasses implement ``forward(s_out, t_out, y, x=None, idx=None)`` and may
    override the hooks. ``s_out``/``t_out`` are ``(logits, feats)`` (``t_out`` None without a
    teacher), ``y`` the labels, ``x`` the inputs, ``idx`` the samples' indices in the training
    split (for methods that keep per-sample state, e.g. CRD's memory bank); ``forward`` returns
    ``{term name: tensor}``, summed by ``fit``."""

    name = "?"
    # The definition's version: part of every run's identity (config.json ``loss_version``), so a
    # run trained under an older definition is never reused as if trained under this one. Bump it
    # whenever the function a loss computes changes (tests/test_loss_fixtures.py holds each
    # version's value on fixed inputs and fails on a change without a bump).
    version = 1
    reference = ""             # the code this loss matches: repository, commit, file (see README)
    requires_teacher = True    # False: no teacher forward pass at all (baseline, DML, BYOT)
    teacher_feats = False      # True: the method reads the teacher's features, not only logits

    def __init__(self, pair: Pair | None = None):
        super().__init__()
        if self.requires_teacher and (pair is None or pair.t_shapes is None):
            raise ValueError(f"Method '{self.name}' distils from a teacher: build it with "
                             f"build_loss('{self.name}', describe_pair(student, teacher, ...)).")
        self.pair = pair

    def start_epoch(self, epoch: int, epochs: int) -> None:
        """Called by ``fit`` before each epoch (two-stage schedules, warm-ups)."""

    def epoch_info(self) -> dict:
        """Recorded in the epoch's history row (e.g. FitNets' stage, so plots can mark it)."""
        return {}

    def extra_logits(self, x: torch.Tensor, student_out) -> dict[str, torch.Tensor]:
        """Extra classifiers to evaluate and record (DML peers, BYOT exits)."""
        return {}


def loss_class(name: str) -> type[DistillLoss]:
    if name not in LOSSES:
        raise ValueError(f"Unknown method '{name}'. Available: {', '.join(sorted(LOSSES))}")
    return LOSSES[name]


def describe_method(name: str) -> str:
    """Markdown for a method notebook: the loss's definition, the reference code it matches and
    its departures (its docstring, the one place they are written)."""
    cls = loss_class(name)
    doc = inspect.cleandoc(cls.__doc__ or "")
    ref = f" Reference code: {cls.reference}." if cls.reference else ""
    return f"**`{name}`** (loss version {cls.version}).{ref}\n\n{doc}"


def hparams(name: str, **overrides) -> dict:
    """Every hyper-parameter of method ``name``: the loss class's defaults, then ``overrides``.

    This is what a run's config records, so a default changed in code later cannot silently
    change what an old config means."""
    params = list(inspect.signature(loss_class(name).__init__).parameters.values())[2:]  # self, pair
    known = {p.name: p.default for p in params}
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise TypeError(f"Method '{name}' has no hyper-parameter {', '.join(map(repr, unknown))}. "
                        f"It accepts: {', '.join(known) or 'none'}.")
    return {**known, **overrides}


def build_loss(name: str, pair: Pair | None = None, **hp) -> DistillLoss:
    return loss_class(name)(pair, **hparams(name, **hp))


def connector(s_shape: tuple[int, ...], t_shape: tuple[int, ...], kernel: int = 1) -> nn.Module:
    """Map a student feature to the teacher's width: Linear for vectors, conv for maps.

    Identity when the shapes already agree. Spatial sizes are reconciled by ``match_spatial``.
    """
    if tuple(s_shape) == tuple(t_shape):
        return nn.Identity()
    if len(s_shape) == 1 and len(t_shape) == 1:
        return nn.Linear(s_shape[0], t_shape[0])
    if len(s_shape) == 3 and len(t_shape) == 3:
        return nn.Sequential(nn.Conv2d(s_shape[0], t_shape[0], kernel, padding=kernel // 2, bias=False),
                             nn.BatchNorm2d(t_shape[0]))
    raise ValueError(f"Cannot connect a student feature of shape {s_shape} to a teacher feature of "
                     f"shape {t_shape}: pick layers that are both vectors or both spatial maps.")


def match_spatial(s: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pool the larger of two feature maps down to the other's spatial size."""
    if s.dim() != 4 or s.shape[-2:] == t.shape[-2:]:
        return s, t
    if s.shape[-1] > t.shape[-1]:
        return nn.functional.adaptive_avg_pool2d(s, t.shape[-2:]), t
    return s, nn.functional.adaptive_avg_pool2d(t, s.shape[-2:])


def full(t: torch.Tensor) -> torch.Tensor:
    """Undo autocast: fp16/bf16 activations back to float32 before softmaxes and sums."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def middle(n: int) -> int:
    """Index of the middle intermediate layer among ``n`` features (the last is the embedding)."""
    return max((n - 1) // 2, 0) if n > 1 else 0
