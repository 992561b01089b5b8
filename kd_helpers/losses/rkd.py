"""RKD: Park et al. 2019, "Relational Knowledge Distillation" (CVPR)."""
import torch
import torch.nn.functional as F

from .base import DistillLoss, register_loss


def pairwise_distance_loss(s_emb, t_emb):
    """Distance-wise RKD: Huber between pairwise distances, each normalised by its mean (eq. 4-5)."""
    n = len(s_emb)
    pairs = max(n * (n - 1), 1)
    eye = torch.eye(n, dtype=torch.bool, device=s_emb.device)

    def normed(e):
        # zeroed diagonal instead of boolean indexing: same means, no gather/scatter per step
        d = torch.cdist(e, e).masked_fill(eye, 0.0)
        return d / (d.sum() / pairs).clamp_min(1e-12)
    ds = normed(s_emb)
    with torch.no_grad():
        dt = normed(t_emb)
    return F.smooth_l1_loss(ds, dt, reduction="sum") / pairs


def triplet_cosines(e: torch.Tensor) -> torch.Tensor:
    """``cos[j, i, k]`` = cosine of the angle at e_j between e_i - e_j and e_k - e_j (0 if i or k == j).

    Computed from the Gram matrix G in O(N^2 D + N^3): <e_i - e_j, e_k - e_j> =
    G_ik - G_ij - G_jk + G_jj, instead of materialising the (N, N, D) difference tensor.
    """
    with torch.autocast(e.device.type, enabled=False):
        # the four-term sum cancels heavily: a bf16 Gram matrix would swamp the cosines
        g = e @ e.t()
    sq = g.diagonal()
    dot = g.unsqueeze(0) - g.unsqueeze(2) - g.unsqueeze(1) + sq.view(-1, 1, 1)
    norm = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * g).clamp_min(0).sqrt()  # norm[j, i] = |e_i - e_j|
    cos = dot / (norm.unsqueeze(2) * norm.unsqueeze(1)).clamp_min(1e-12)
    self_pair = torch.eye(len(e), dtype=torch.bool, device=e.device)
    return cos.masked_fill(self_pair.unsqueeze(2) | self_pair.unsqueeze(1), 0.0)


def angle_loss(s_emb, t_emb):
    """Angle-wise RKD: Huber between cosines of the angle at j of every triplet (i, j, k) (eq. 6-7)."""
    def cosines(e):
        return triplet_cosines(e).flatten()
    with torch.no_grad():
        at = cosines(t_emb)
    return F.smooth_l1_loss(cosines(s_emb), at)


@register_loss("rkd")
class RKD(DistillLoss):
    """``CE + w_d * L_RKD-D + w_a * L_RKD-A`` on penultimate embeddings (any widths).

    Paper defaults: ``w_d = 25``, ``w_a = 50``. The angle term costs O(N^3) in the batch size,
    so it uses the first ``angle_samples`` examples of each (shuffled) batch: an unbiased
    estimate of the same mean over triplets, at batch sizes like the paper's.
    """
    teacher_feats = True

    def __init__(self, pair=None, w_d: float = 25.0, w_a: float = 50.0, layer: int = -1, angle_samples: int = 64):
        super().__init__(pair)
        self.w_d, self.w_a, self.layer, self.angle_samples = w_d, w_a, layer, angle_samples

    def forward(self, s_out, t_out, y, x=None):
        s, t = s_out[1][self.layer].flatten(1), t_out[1][self.layer].flatten(1)
        m = self.angle_samples
        return {"ce": F.cross_entropy(s_out[0], y),
                "rkd_d": self.w_d * pairwise_distance_loss(s, t),
                # the O(N^3) angle term is skipped when it has no weight (the distance-only variant)
                "rkd_a": self.w_a * angle_loss(s[:m], t[:m]) if self.w_a else s.new_zeros(())}
