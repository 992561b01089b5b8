"""SRD + DIST: the seed study's ``SRDwithDIST`` -- SRD's representation path with DIST's
relaxed (Pearson) matching of the logits, on the raw logits.

Reference: chitraz/KnowledgeDistillationForModelCompression ``scripts/KD_methods.py``
(``DISTV2``: DIST's inter + intra terms with no softmax and no temperature, ``beta = gamma = 1``),
``scripts/Utils.py`` (total ``CE + A * FM + B * SR``) and ``run_compareKD.sh`` (``-A 1 -B 10``
for width compression WRN-40-2 -> WRN-40-1, ``-A 1 -B 4`` for WRN-40-4 -> WRN-16-2).
"""
import torch

from .base import register_loss
from .dist import pearson
from .srd import SRDBase


def relation_terms(z_s: torch.Tensor, z_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(1 - mean row Pearson, 1 - mean column Pearson)`` of two raw logit matrices (DISTV2).

    The inter term is invariant to ``z_s -> a_n z_s + b_n`` per row (``a_n > 0``), both terms to
    one ``a z_s + b``, as Pearson correlation is; DIST's softened-probability form is neither."""
    return 1 - pearson(z_s, z_t).mean(), 1 - pearson(z_s.t(), z_t.t()).mean()


@register_loss("srd_dist")
class SRDDist(SRDBase):
    """``CE + alpha * L_FM + beta * (L_inter + L_intra)`` on the raw logits ``W_t c(f_s)`` and
    ``z_t``; the seed's width-compression weights ``alpha = 1``, ``beta = 10`` (its WRN-40-4 ->
    WRN-16-2 runs use ``beta = 4``). Version 1 applied DIST's softmax(z/4) with ``tau^2`` and
    ``beta = 2``: another objective (value 3-7x, gradient cosine 0.19-0.93 against the seed's)."""
    version = 2
    reference = "chitraz/KnowledgeDistillationForModelCompression scripts/KD_methods.py DISTV2 + Utils.py SRDwithDIST"

    def __init__(self, pair=None, alpha: float = 1.0, beta: float = 10.0):
        super().__init__(pair, alpha=alpha, beta=beta)

    def sr_loss(self, z_sr, z_t):
        inter, intra = relation_terms(z_sr, z_t)
        return {"sr_inter": self.beta * inter, "sr_intra": self.beta * intra}
