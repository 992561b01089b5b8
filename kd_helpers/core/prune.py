"""Pruning operations on a network: unstructured (global L1 magnitude) and structured
(channel/neuron). The distill-then-prune sweep built on them is ``kd_helpers.prune_sweep``.

Structured pruning uses Torch-Pruning's dependency graph (Fang et al. 2023, "DepGraph"), so
coupled layers (residual adds, conv -> flatten -> linear) shrink together and the pruned
network really is smaller. Unstructured pruning zeroes weights behind masks
(``torch.nn.utils.prune``); the compute stays dense, which the latency columns show.
"""
from __future__ import annotations

import torch
import torch.nn.utils.prune as tprune
from torch import nn


KINDS = ("unstructured", "structured")


def _prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def unstructured(model: nn.Module, amount: float) -> None:
    """Global L1 magnitude pruning of every Linear/Conv weight to ``amount`` sparsity.

    Masks stay attached (``weight = weight_orig * mask``) so fine-tuning keeps pruned weights at 0.
    """
    tprune.global_unstructured(_prunable(model), pruning_method=tprune.L1Unstructured, amount=amount)


def make_permanent(model: nn.Module) -> None:
    for m, name in _prunable(model):
        if tprune.is_pruned(m) and hasattr(m, f"{name}_mask"):
            tprune.remove(m, name)


def structured(model: nn.Module, ratio: float, in_shape, importance: str = "l1") -> None:
    """Remove ``ratio`` of the channels/neurons of every prunable layer but the classifier."""
    import torch_pruning as tp
    imp = {"l1": tp.importance.MagnitudeImportance(p=1),
           "l2": tp.importance.MagnitudeImportance(p=2),
           "bn": tp.importance.BNScaleImportance()}[importance]
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    was = model.training
    model.eval()
    pruner = tp.pruner.MagnitudePruner(model, torch.randn(2, *in_shape), importance=imp, pruning_ratio=ratio,
                                       ignored_layers=[classifier], output_transform=lambda out: out[0])
    pruner.step()
    model.train(was)


def sparsity(model: nn.Module) -> float:
    """Share of zero weights over all Linear/Conv weights (masks applied)."""
    ws = [getattr(m, n) for m, n in _prunable(model)]
    return float(sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws))


def prune(model: nn.Module, kind: str, amount: float, in_shape, importance: str = "l1") -> None:
    """Prune ``model`` in place: ``unstructured`` to ``amount`` sparsity, or ``structured``
    removing ``amount`` of the channels/neurons."""
    if kind not in KINDS:
        raise ValueError(f"Unknown pruning kind '{kind}'. Available: {', '.join(KINDS)}")
    if kind == "unstructured":
        unstructured(model, amount)
    else:
        structured(model, amount, in_shape, importance)
