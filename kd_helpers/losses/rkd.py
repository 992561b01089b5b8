"""RKD: Park et al. 2019, "Relational Knowledge Distillation" (CVPR)."""
import torch
import torch.nn.functional as F

from .base import DistillLoss, register_loss


def pairwise_distance_loss(s_emb, t_emb):
    """Distance-wise RKD: Huber between pairwise distances, each normalised by its mean (eq. 4-5)."""
    def normed(e):
        d = torch.cdist(e, e)
        off = ~torch.eye(len(e), dtype=torch.bool, device=e.device)
        return d / d[off].mean().clamp_min(1e-12), off
    ds, off = normed(s_emb)
    with torch.no_grad():
        dt, _ = normed(t_emb)
    return F.smooth_l1_loss(ds[off], dt[off])


def angle_loss(s_emb, t_emb):
    """Angle-wise RKD: Huber between cosines of the angle at j of every triplet (i, j, k) (eq. 6-7)."""
    def cosines(e):
        diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), dim=2)  # diff[j, i] = unit(e_i - e_j)
        return torch.bmm(diff, diff.transpose(1, 2)).flatten()
    with torch.no_grad():
        at = cosines(t_emb)
    return F.smooth_l1_loss(cosines(s_emb), at)


@register_loss("rkd")
class RKD(DistillLoss):
    """``CE + w_d * L_RKD-D + w_a * L_RKD-A`` on penultimate embeddings (any widths).

    Paper defaults: ``w_d = 25``, ``w_a = 50``.
    """
    teacher_feats = True

    def __init__(self, pair=None, w_d: float = 25.0, w_a: float = 50.0, layer: int = -1):
        super().__init__(pair)
        self.w_d, self.w_a, self.layer = w_d, w_a, layer

    def forward(self, s_out, t_out, y, x=None):
        s, t = s_out[1][self.layer].flatten(1), t_out[1][self.layer].flatten(1)
        return {"ce": F.cross_entropy(s_out[0], y),
                "rkd_d": self.w_d * pairwise_distance_loss(s, t),
                "rkd_a": self.w_a * angle_loss(s, t)}
