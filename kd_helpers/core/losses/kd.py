"""Vanilla KD: Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network"."""
import torch
import torch.nn.functional as F

from .base import DistillLoss, register_loss


def kd_div(s_logits: torch.Tensor, t_logits: torch.Tensor, T: float) -> torch.Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))``, averaged over the batch.

    The ``T^2`` keeps gradient magnitudes comparable across temperatures (Hinton 2015, sec. 2).
    """
    log_ps = F.log_softmax(s_logits / T, dim=1)
    log_pt = F.log_softmax(t_logits / T, dim=1)
    return F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True) * T * T


@register_loss("kd")
class VanillaKD(DistillLoss):
    """``alpha * CE(y, s) + (1 - alpha) * T^2 * KL(p_t^T || p_s^T)``.

    The seed study's ``KD_Hinton`` with ``(1 - A) * CE + A * KD``: its ``-A 0.9`` is ``alpha = 0.1``.
    mdistiller's ``CE_WEIGHT 0.1, KD_WEIGHT 0.9`` is the same loss."""
    reference = "chitraz/KnowledgeDistillationForModelCompression scripts/KD_methods.py KD_Hinton + Utils.py"

    def __init__(self, pair=None, T: float = 4.0, alpha: float = 0.1):
        super().__init__(pair)
        self.T, self.alpha = T, alpha

    def forward(self, s_out, t_out, y, x=None, idx=None):
        return {"ce": self.alpha * F.cross_entropy(s_out[0], y),
                "kd": (1 - self.alpha) * kd_div(s_out[0], t_out[0], self.T)}
