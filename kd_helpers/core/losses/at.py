"""AT: Zagoruyko & Komodakis 2017, "Paying More Attention to Attention" (ICLR).

Reference: szagoruyko/attention-transfer ``utils.py`` (``at``, ``at_loss``) and ``cifar.py``
(``opt.beta * sum(loss_groups)``); RepDistiller ``distiller_zoo/AT.py`` and mdistiller ``AT.py``
compute the same per-layer term and also weight the sum by beta (no 1/2).
"""
import torch
import torch.nn.functional as F

from .base import DistillLoss, match_spatial, register_loss


def attention_map(f: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Spatial attention ``Q = vec(mean_c |A_c|^p)``, L2-normalised per sample (eq. 2 with F_sum^p;
    the channel mean, as the authors' code, is the paper's sum up to a constant the norm removes)."""
    return F.normalize(f.abs().pow(p).mean(1).flatten(1), dim=1)


def at_loss(fs: torch.Tensor, ft: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """``mean ||Q_s - Q_t||^2`` over batch and positions, as the authors' ``at_loss``."""
    fs, ft = match_spatial(fs, ft)
    return (attention_map(fs, p) - attention_map(ft, p)).pow(2).mean()


@register_loss("at")
class AttentionTransfer(DistillLoss):
    """``CE + beta * sum_j at_loss(j)`` over stage pairs of equal spatial size; ``beta = 1000``.

    Matches the authors' code (value and gradient, ``tests/test_loss_fixtures.py``). The paper
    writes ``beta/2``; every reference implementation uses ``beta`` without the 1/2, and so does
    this loss. Version 1 used ``beta/2``: AT at half the reference's strength.
    RepDistiller/mdistiller's ``beta = 1000`` is the same weight. Pooling the larger map to the
    smaller one's size (RepDistiller's rule) lets stages of different resolution pair up.

    Needs spatial feature maps: for MLPs an "attention map" over neurons has no spatial
    meaning, so AT refuses MLP pairs with a clear message.
    """
    version = 2
    reference = "szagoruyko/attention-transfer utils.py at_loss + cifar.py (beta * sum over groups)"
    teacher_feats = True

    def __init__(self, pair=None, beta: float = 1000.0, p: float = 2.0):
        super().__init__(pair)
        s_maps = [i for i, s in enumerate(pair.s_shapes) if len(s) == 3]
        t_maps = [i for i, s in enumerate(pair.t_shapes) if len(s) == 3]
        # pair each teacher stage with the deepest student stage of the same spatial size
        self.pairs = []
        for ti in t_maps:
            same = [si for si in s_maps if pair.s_shapes[si][1:] == pair.t_shapes[ti][1:]]
            if same:
                self.pairs.append((same[-1], ti))
        if not self.pairs:
            raise ValueError("AT needs spatial feature maps of matching size in student and teacher "
                             f"(student feats {pair.s_shapes}, teacher feats {pair.t_shapes}). "
                             "MLP features are vectors: use a CNN pair (e.g. cifar10) for AT.")
        self.beta, self.p = beta, p

    def forward(self, s_out, t_out, y, x=None, idx=None):
        at = sum(at_loss(s_out[1][si], t_out[1][ti], self.p) for si, ti in self.pairs)
        return {"ce": F.cross_entropy(s_out[0], y), "at": self.beta * at}
