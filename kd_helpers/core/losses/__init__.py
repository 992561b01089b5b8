"""Loss registry. Contract (see STYLE.md):

``loss = build_loss(name, pair, **hparams)`` returns an ``nn.Module`` whose
``forward(student_out, teacher_out, targets, x=None)`` returns a dict of already-weighted
named terms; the training loop sums and logs them. ``student_out``/``teacher_out`` are
``(logits, feats)`` pairs (``teacher_out`` is None for teacher-free methods).
Connectors, regressors, auxiliary heads and peer networks are parameters of the loss and
are optimised with the student.

Adding a method = one file in this folder that defines a ``DistillLoss`` subclass
decorated with ``@register_loss("name")``; it is imported below.
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import (LOSSES, DistillLoss, Pair, build_loss, describe_method, describe_pair, hparams, loss_class,
                   register_loss)

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base":
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["LOSSES", "DistillLoss", "Pair", "build_loss", "describe_method", "describe_pair", "hparams", "loss_class",
           "register_loss"]
