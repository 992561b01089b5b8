"""BYOT: Zhang et al. 2019, "Be Your Own Teacher: Improve the Performance of Convolutional
Neural Networks via Self Distillation" (ICCV).

The paper has no official code. Reference: luanyunteng/pytorch-be-your-own-teacher ``train.py``
(``kd_loss_function``, ``feature_loss_function`` and the total loss of ``train``), the
reimplementation the field runs; matched in value and gradient (tests/test_loss_fixtures.py).
"""
import torch
import torch.nn.functional as F
from torch import nn

from .base import DistillLoss, full, register_loss


def exit_head(shape: tuple[int, ...], emb: int, num_classes: int) -> nn.ModuleDict:
    """A shallow exit: bottleneck to the deepest embedding's width, then a classifier."""
    if len(shape) == 3:
        bottleneck = nn.Sequential(nn.Conv2d(shape[0], emb, 3, stride=2, padding=1), nn.BatchNorm2d(emb),
                                   nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    else:
        bottleneck = nn.Sequential(nn.Linear(shape[0], emb), nn.BatchNorm1d(emb), nn.ReLU())
    return nn.ModuleDict({"bottleneck": bottleneck, "fc": nn.Linear(emb, num_classes)})


def soft_cross_entropy(z: torch.Tensor, target_z: torch.Tensor, T: float) -> torch.Tensor:
    """``T^2 * mean_n -sum_c softmax(target/T) log softmax(z/T)``: the reference's exit KD term
    (a cross-entropy, i.e. KL plus the target's entropy; the same gradient for ``z``)."""
    return -(F.softmax(target_z / T, 1) * F.log_softmax(z / T, 1)).sum(1).mean() * T * T


def byot_terms(deep_logits, deep_emb, exits, y, alpha: float, lam: float, T: float) -> dict:
    """The reference's total, term by term: ``(1-alpha) * (CE(deep) + sum_i CE(exit_i))
    + alpha * sum_i T^2 CE(q_deep^T, q_i^T) + lam * sum_i ||e_i - F_deep||^2`` (summed over the
    batch and features, as its ``feature_loss_function``); the deep targets are detached.
    ``exits`` is a list of ``(embedding, logits)`` per shallow exit."""
    z_deep, f_deep = deep_logits.detach(), deep_emb.detach()
    terms = {"ce": (1 - alpha) * F.cross_entropy(deep_logits, y), "exit_ce": 0.0, "exit_kd": 0.0,
             "exit_hint": 0.0}
    for e, z in exits:
        terms["exit_ce"] = terms["exit_ce"] + (1 - alpha) * F.cross_entropy(z, y)
        terms["exit_kd"] = terms["exit_kd"] + alpha * soft_cross_entropy(z, z_deep, T)
        terms["exit_hint"] = terms["exit_hint"] + lam * (e - f_deep).pow(2).sum()
    return terms


@register_loss("byot")
class BYOT(DistillLoss):
    """Self-distillation through shallow exits, the reference's loss (``byot_terms``) with its
    defaults ``alpha = 0.1`` (its ``--alpha``), ``T = 3`` (``--temperature``) and
    ``lam = 1e-6`` (its ``--beta``, on a feature distance summed over batch and features).

    Departures, all about the exits, which the study's networks do not have: each intermediate
    feature but the embedding gets an exit (a conv3x3/2 + BN + ReLU + pool bottleneck on maps, a
    Linear + BN + ReLU on vectors, then a classifier), where the reference's ResNet has three
    bottleneck branches of its own design. The paper's own text (and the first author's later
    code) weights the deepest CE by 1, uses ``lambda = 0.03`` on an L2 distance after per-exit
    adaptation layers; this loss follows the reimplementation. Version 1 used KL with ``T^2``,
    a per-element mean feature distance with ``lam = 1`` and a deepest CE of weight 1.

    No teacher network. Each exit is recorded as ``exit<i>`` (the student's head is the deepest).
    """
    version = 2
    reference = "luanyunteng/pytorch-be-your-own-teacher train.py (kd_loss_function, feature_loss_function)"
    requires_teacher = False

    def __init__(self, pair=None, alpha: float = 0.1, lam: float = 1e-6, T: float = 3.0):
        super().__init__(pair)
        emb = pair.s_shapes[-1][0]
        self.exits = nn.ModuleList(exit_head(s, emb, pair.num_classes) for s in pair.s_shapes[:-1])
        self.alpha, self.lam, self.T = alpha, lam, T

    def _exits(self, feats):
        for head, f in zip(self.exits, feats):
            e = head["bottleneck"](f)
            yield full(e), full(head["fc"](e))

    def forward(self, s_out, t_out, y, x=None, idx=None):
        logits, feats = s_out
        return byot_terms(logits, full(feats[-1]), list(self._exits(feats[:-1])), y, self.alpha, self.lam, self.T)

    def extra_logits(self, x, s_out):
        return {f"exit{i + 1}": z for i, (_, z) in enumerate(self._exits(s_out[1][:-1]))}
