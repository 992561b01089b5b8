"""Logits + intermediate feature matching (the reference study's "logits+feature KD").

A FitNets-style hint term trained jointly with soft targets (Romero et al. 2014 combined
with Hinton et al. 2015 in a single stage).
"""
import torch.nn.functional as F

from .base import DistillLoss, connector, match_spatial, register_loss
from .kd import kd_div


@register_loss("feature_kd")
class FeatureKD(DistillLoss):
    """``alpha*CE + beta*MSE(c(f_s), f_t) + (1-alpha-beta)*T^2*KL``; ``c`` is a linear/1x1-conv connector.

    The terms are the seed study's ``FitNet-like`` terms (``nn.CrossEntropyLoss``, ``KD_Hinton``,
    ``nn.MSELoss`` on the connected feature) with weights that sum to one; the seed weights them
    ``(1-A, A, B) = (0.1, 0.9, 2)`` on its hint layer, this loss ``(alpha, 1-alpha-beta, beta)`` on
    the penultimate embeddings (the study's FitNets notebook runs the seed's weights)."""
    reference = "chitraz/KnowledgeDistillationForModelCompression scripts/Utils.py (FitNet-like terms)"
    teacher_feats = True

    def __init__(self, pair=None, T: float = 4.0, alpha: float = 0.1, beta: float = 0.45,
                 s_layer: int = -1, t_layer: int = -1):
        super().__init__(pair)
        if alpha + beta > 1:
            raise ValueError(f"feature_kd needs alpha + beta <= 1 (got {alpha} + {beta}).")
        self.connector = connector(pair.s_shapes[s_layer], pair.t_shapes[t_layer])
        self.T, self.alpha, self.beta, self.s_layer, self.t_layer = T, alpha, beta, s_layer, t_layer

    def forward(self, s_out, t_out, y, x=None, idx=None):
        fs, ft = match_spatial(self.connector(s_out[1][self.s_layer]), t_out[1][self.t_layer])
        return {"ce": self.alpha * F.cross_entropy(s_out[0], y),
                "feat": self.beta * F.mse_loss(fs, ft),
                "kd": (1 - self.alpha - self.beta) * kd_div(s_out[0], t_out[0], self.T)}
