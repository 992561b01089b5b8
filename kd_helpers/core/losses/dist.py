"""DIST: Huang et al. 2022, "Knowledge Distillation from A Stronger Teacher" (NeurIPS)."""
import torch
import torch.nn.functional as F

from .base import DistillLoss, register_loss


def pearson(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Row-wise Pearson correlation of two (N, C) tensors."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_terms(s_logits, t_logits, tau: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inter, intra)``: ``tau^2 * (1 - mean rho)`` over rows (per sample, across classes)
    and over columns (per class, across the batch) of the softened probabilities."""
    ps = F.softmax(s_logits / tau, dim=1)
    pt = F.softmax(t_logits / tau, dim=1)
    inter = tau ** 2 * (1 - pearson(ps, pt).mean())
    intra = tau ** 2 * (1 - pearson(ps.t(), pt.t()).mean())
    return inter, intra


@register_loss("dist")
class DIST(DistillLoss):
    """``CE + beta * L_inter + gamma * L_intra``; the paper's CIFAR setting ``beta = gamma = 2, tau = 4``.

    The authors' code as the seed study carries it (``scripts/distiller_zoo/DIST.py``, from the
    paper's appendix A.1 and hunto/image_classification_sota), with the seed's ``-A 1 -B 2 -G 2 -T 4``."""
    reference = "chitraz/KnowledgeDistillationForModelCompression scripts/distiller_zoo/DIST.py (= hunto DIST, appendix A.1)"

    def __init__(self, pair=None, beta: float = 2.0, gamma: float = 2.0, tau: float = 4.0):
        super().__init__(pair)
        self.beta, self.gamma, self.tau = beta, gamma, tau

    def forward(self, s_out, t_out, y, x=None, idx=None):
        inter, intra = dist_terms(s_out[0], t_out[0], self.tau)
        return {"ce": F.cross_entropy(s_out[0], y), "inter": self.beta * inter, "intra": self.gamma * intra}
