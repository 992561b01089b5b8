"""SRD + DIST: SRD's representation path with DIST's relaxed (Pearson) logit matching.

The seed study's variant: the logits produced by the teacher's classifier from the student's
features are matched row- and column-wise by Pearson correlation (Huang et al. 2022)
instead of by MSE (Yang et al. 2021).
"""
from .base import register_loss
from .dist import dist_terms
from .srd import SRDBase


@register_loss("srd_dist")
class SRDDist(SRDBase):
    """``CE + alpha * L_FM + beta * (L_inter + L_intra)`` with DIST's temperature ``tau``."""

    def __init__(self, pair=None, alpha: float = 1.0, beta: float = 2.0, tau: float = 4.0):
        super().__init__(pair, alpha=alpha, beta=beta)
        self.tau = tau

    def sr_loss(self, z_sr, z_t):
        inter, intra = dist_terms(z_sr, z_t, self.tau)
        return {"sr_inter": self.beta * inter, "sr_intra": self.beta * intra}
