"""SRD: Yang, Martinez, Bulat & Tzimiropoulos 2021, "Knowledge Distillation via Softmax
Regression Representation Learning" (ICLR).

The student's penultimate feature goes through a connector and then through the teacher's
frozen classifier; the logits this produces are matched to the teacher's.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .base import DistillLoss, full, register_loss


def teacher_classifier(teacher: nn.Module) -> nn.Module:
    """The module that maps the teacher's penultimate embedding to logits (``model.head``)."""
    head = getattr(teacher, "head", None)
    if head is None:
        raise ValueError(f"SRD needs the teacher's classifier as `teacher.head`; "
                         f"{type(teacher).__name__} has none.")
    return head


class SRDBase(DistillLoss):
    """``CE + alpha * L_FM + beta * L_SR``: L_FM = MSE(c(f_s), f_t); L_SR = match(W_t c(f_s), z_t)."""
    teacher_feats = True

    def __init__(self, pair=None, alpha: float = 1.0, beta: float = 1.0):
        super().__init__(pair)
        s, t = pair.s_shapes[-1], pair.t_shapes[-1]
        if len(s) != 1 or len(t) != 1:
            raise ValueError(f"SRD connects penultimate embeddings (vectors); got {s} and {t}.")
        # the paper's connector: 1x1 conv + BN + ReLU, i.e. Linear + BN + ReLU on vectors
        self.connector = nn.Sequential(nn.Linear(s[0], t[0], bias=False), nn.BatchNorm1d(t[0]), nn.ReLU())
        # a plain list keeps the frozen teacher head out of this module's parameters and state
        self._t_head = [teacher_classifier(pair.teacher)]
        self.alpha, self.beta = alpha, beta

    def sr_loss(self, z_sr: torch.Tensor, z_t: torch.Tensor) -> dict:
        raise NotImplementedError

    def forward(self, s_out, t_out, y, x=None):
        f = full(self.connector(s_out[1][-1]))
        z_sr = full(self._t_head[0](f))  # gradients flow through the frozen head into the connector
        return {"ce": F.cross_entropy(s_out[0], y),
                "fm": self.alpha * F.mse_loss(f, t_out[1][-1]),
                **self.sr_loss(z_sr, t_out[0])}


@register_loss("srd")
class SRD(SRDBase):
    """SRD with the L2 (MSE) logit matching of the paper."""

    def sr_loss(self, z_sr, z_t):
        return {"sr": self.beta * F.mse_loss(z_sr, z_t)}
