"""Plain cross-entropy: the teacher and the no-KD baseline student."""
import torch.nn.functional as F

from .base import DistillLoss, register_loss


@register_loss("ce")
class CrossEntropy(DistillLoss):
    reference = "torch.nn.functional.cross_entropy"
    requires_teacher = False

    def __init__(self, pair=None, label_smoothing: float = 0.0):
        super().__init__(pair)
        self.label_smoothing = label_smoothing

    def forward(self, s_out, t_out, y, x=None, idx=None):
        return {"ce": F.cross_entropy(s_out[0], y, label_smoothing=self.label_smoothing)}
