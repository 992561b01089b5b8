"""DKD: Zhao et al. 2022, "Decoupled Knowledge Distillation" (CVPR).

Reference: megvii-research/mdistiller ``mdistiller/distillers/DKD.py`` (``dkd_loss``), matched in
value and gradient (``tests/test_loss_fixtures.py``).
"""
import torch
import torch.nn.functional as F

from .base import DistillLoss, register_loss


def binary_log_probs(z: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """``log [p_target, sum of the non-target p]`` at temperature-scaled logits ``z``, in log space.

    mdistiller sums the non-target probabilities and takes the log; this is the same quantity
    computed with ``logsumexp``, so it stays finite with a gradient when the target logit is far
    above the rest (``1 - p_target`` rounds to 0 in float32 from a margin of ~17 in ``z``)."""
    log_p = F.log_softmax(z, 1)
    log_target = log_p.masked_fill(~gt, float("-inf")).logsumexp(1)
    log_rest = log_p.masked_fill(gt, float("-inf")).logsumexp(1)
    return torch.stack([log_target, log_rest], 1)


def dkd_terms(s_logits, t_logits, y, T: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(TCKD, NCKD)``, each scaled by ``T^2``.

    TCKD = KL(b_t || b_s) on the binary (target, non-target) probabilities;
    NCKD = KL(p~_t || p~_s) on the distribution over non-target classes only (eq. 3-4).
    """
    gt = F.one_hot(y, s_logits.shape[1]).bool()
    log_bs = binary_log_probs(s_logits / T, gt)
    log_bt = binary_log_probs(t_logits / T, gt)
    tckd = F.kl_div(log_bs, log_bt, reduction="batchmean", log_target=True) * T * T
    # masking the target with a large negative logit removes it from the softmax (mdistiller's way)
    log_qs = F.log_softmax(s_logits / T - 1000.0 * gt, 1)
    log_qt = F.log_softmax(t_logits / T - 1000.0 * gt, 1)
    nckd = F.kl_div(log_qs, log_qt, reduction="batchmean", log_target=True) * T * T
    return tckd, nckd


@register_loss("dkd")
class DKD(DistillLoss):
    """``CE + w * (alpha * TCKD + beta * NCKD)``; paper: alpha=1, beta=8, T=4, w ramps 0->1 over
    ``warmup`` epochs (20 in the paper's 240-epoch schedule; mdistiller's ``min(epoch/warmup, 1)``).

    Same function as mdistiller's ``dkd_loss``; only the binary probabilities are computed in log
    space (see ``binary_log_probs``), which changes nothing at ordinary logits and keeps TCKD's
    gradient at large margins, where mdistiller's float32 ``log`` of a sum is also fine but the
    earlier ``1 - p_target`` form of this file lost it.
    """
    reference = "megvii-research/mdistiller mdistiller/distillers/DKD.py dkd_loss"

    def __init__(self, pair=None, alpha: float = 1.0, beta: float = 8.0, T: float = 4.0, warmup: int = 20):
        super().__init__(pair)
        self.alpha, self.beta, self.T, self.warmup = alpha, beta, T, warmup
        self.ramp = 1.0

    def start_epoch(self, epoch, epochs):
        self.ramp = min((epoch + 1) / self.warmup, 1.0) if self.warmup else 1.0

    def forward(self, s_out, t_out, y, x=None, idx=None):
        tckd, nckd = dkd_terms(s_out[0], t_out[0], y, self.T)
        return {"ce": F.cross_entropy(s_out[0], y),
                "tckd": self.ramp * self.alpha * tckd, "nckd": self.ramp * self.beta * nckd}
