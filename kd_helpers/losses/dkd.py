"""DKD: Zhao et al. 2022, "Decoupled Knowledge Distillation" (CVPR)."""
import torch
import torch.nn.functional as F

from .base import DistillLoss, register_loss


def dkd_terms(s_logits, t_logits, y, T: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(TCKD, NCKD)``, each scaled by ``T^2``.

    TCKD = KL(b_t || b_s) on the binary (target, non-target) probabilities;
    NCKD = KL(p~_t || p~_s) on the distribution over non-target classes only (eq. 3-4).
    """
    gt = F.one_hot(y, s_logits.shape[1]).bool()
    ps, pt = F.softmax(s_logits / T, 1), F.softmax(t_logits / T, 1)
    bs = torch.stack([ps[gt], 1 - ps[gt]], 1).clamp_min(1e-12)
    bt = torch.stack([pt[gt], 1 - pt[gt]], 1).clamp_min(1e-12)
    tckd = (bt * (bt.log() - bs.log())).sum(1).mean() * T * T
    # masking the target with a large negative logit removes it from the softmax
    log_qs = F.log_softmax(s_logits / T - 1000.0 * gt, 1)
    log_qt = F.log_softmax(t_logits / T - 1000.0 * gt, 1)
    nckd = F.kl_div(log_qs, log_qt, reduction="batchmean", log_target=True) * T * T
    return tckd, nckd


@register_loss("dkd")
class DKD(DistillLoss):
    """``CE + w * (alpha * TCKD + beta * NCKD)``; paper: alpha=1, beta=8, T=4, w ramps 0->1 over
    ``warmup`` epochs (20 in the paper's 240-epoch schedule)."""

    def __init__(self, pair=None, alpha: float = 1.0, beta: float = 8.0, T: float = 4.0, warmup: int = 20):
        super().__init__(pair)
        self.alpha, self.beta, self.T, self.warmup = alpha, beta, T, warmup
        self.ramp = 1.0

    def start_epoch(self, epoch, epochs):
        self.ramp = min((epoch + 1) / self.warmup, 1.0) if self.warmup else 1.0

    def forward(self, s_out, t_out, y, x=None):
        tckd, nckd = dkd_terms(s_out[0], t_out[0], y, self.T)
        return {"ce": F.cross_entropy(s_out[0], y),
                "tckd": self.ramp * self.alpha * tckd, "nckd": self.ramp * self.beta * nckd}
