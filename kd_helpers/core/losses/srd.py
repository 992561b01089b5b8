"""SRD: Yang, Martinez, Bulat & Tzimiropoulos 2021, "Knowledge Distillation via Softmax
Regression Representation Learning" (ICLR).

The student's last feature map goes through a connector and then through the teacher's frozen
layers that follow that map (pooling and classifier); the logits this produces are matched to
the teacher's. Reference: the seed study's SRD (chitraz/KnowledgeDistillationForModelCompression
``scripts/Utils.py``, SRD branch, with ``distiller_zoo/AIN.py`` ``transfer_conv``), which follows
the authors' jingyang2017/SRD_ossl (``train_student.py``, ``helper/loops.py``).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import DistillLoss, full, match_spatial, register_loss


def teacher_tail(teacher: nn.Module, spatial: bool):
    """The teacher's frozen layers from its last feature map (``classify_map``) or from its
    penultimate embedding (``head``) to its logits."""
    name = "classify_map" if spatial else "head"
    tail = getattr(teacher, name, None)
    if tail is None:
        raise ValueError(f"SRD needs the teacher's layers after its last feature as `teacher.{name}`; "
                         f"{type(teacher).__name__} has none.")
    return tail


def srd_connector(c_in: int, c_out: int, spatial: bool) -> nn.Module:
    """The references' connector: 1x1 conv + BN + ReLU on maps (He-normal init, fan-out, as
    ``transfer_conv``); its analogue Linear + BN + ReLU where the features are vectors (MLPs)."""
    if spatial:
        conv = nn.Conv2d(c_in, c_out, 1, bias=False)
        nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / c_out))
        return nn.Sequential(conv, nn.BatchNorm2d(c_out), nn.ReLU())
    return nn.Sequential(nn.Linear(c_in, c_out, bias=False), nn.BatchNorm1d(c_out), nn.ReLU())


class SRDBase(DistillLoss):
    """``CE + alpha * L_FM + beta * L_SR``: L_FM = MSE(c(f_s), f_t) over the whole feature
    (maps included, as the seed's ``MSE_loss(feats_adapted, T_feats[-2])``);
    L_SR = match(tail_t(c(f_s)), z_t) with the teacher's frozen tail.

    The feature is the last spatial map where both networks have one (the references'
    ``feat[-2]``), else the penultimate embedding (MLPs). Version 1 pooled first and connected
    the embeddings (Linear + BN1d): on maps that is another function (7.8x / 9.2x on the two terms
    in train-mode BN, measured against the seed's code)."""
    teacher_feats = True

    def __init__(self, pair=None, alpha: float = 1.0, beta: float = 1.0):
        super().__init__(pair)
        s, t = pair.s_shapes, pair.t_shapes
        self.spatial = len(s) > 1 and len(t) > 1 and len(s[-2]) == 3 and len(t[-2]) == 3
        self.layer = -2 if self.spatial else -1
        fs, ft = s[self.layer], t[self.layer]
        if not self.spatial and (len(fs) != 1 or len(ft) != 1):
            raise ValueError(f"SRD connects the last feature maps or the penultimate embeddings; got {fs} and {ft}.")
        self.connector = srd_connector(fs[0], ft[0], self.spatial)
        self.t_size = tuple(ft[1:])
        # a plain list keeps the frozen teacher tail out of this module's parameters and state
        self._tail = [teacher_tail(pair.teacher, self.spatial)]
        self.alpha, self.beta = alpha, beta

    def sr_loss(self, z_sr: torch.Tensor, z_t: torch.Tensor) -> dict:
        raise NotImplementedError

    def forward(self, s_out, t_out, y, x=None, idx=None):
        f, f_t = match_spatial(full(self.connector(s_out[1][self.layer])), full(t_out[1][self.layer]))
        if f.shape[2:] != f_t.shape[2:]:   # a smaller student map: the teacher's tail needs its size
            f = F.interpolate(f, size=f_t.shape[2:], mode="nearest")
        z_sr = full(self._tail[0](f))   # gradients flow through the frozen tail into the connector
        return {"ce": F.cross_entropy(s_out[0], y),
                "fm": self.alpha * F.mse_loss(f, f_t),
                **self.sr_loss(z_sr, full(t_out[0]))}


@register_loss("srd")
class SRD(SRDBase):
    """SRD with the L2 (MSE) logit matching of the paper and the seed study's weights
    ``alpha = 1`` (its ``-A``), ``beta = 2`` (its ``-B``). SRD_ossl's own code uses a
    channel-mean (``statm_loss``) feature term with weight 1 (10 for ShuffleNet) instead of the
    seed's whole-map MSE; both use MSE on the logits with weight 1 there."""
    version = 2
    reference = "chitraz/KnowledgeDistillationForModelCompression scripts/Utils.py (mode SRD, -A 1 -B 2)"

    def __init__(self, pair=None, alpha: float = 1.0, beta: float = 2.0):
        super().__init__(pair, alpha=alpha, beta=beta)

    def sr_loss(self, z_sr, z_t):
        return {"sr": self.beta * F.mse_loss(z_sr, z_t)}
