"""BYOT: Zhang et al. 2019, "Be Your Own Teacher: Improve the Performance of Convolutional
Neural Networks via Self Distillation" (ICCV)."""
import torch.nn.functional as F
from torch import nn

from .base import DistillLoss, full, register_loss
from .kd import kd_div


def exit_head(shape: tuple[int, ...], emb: int, num_classes: int) -> nn.ModuleDict:
    """A shallow exit: bottleneck to the deepest embedding's width, then a classifier."""
    if len(shape) == 3:
        bottleneck = nn.Sequential(nn.Conv2d(shape[0], emb, 3, stride=2, padding=1), nn.BatchNorm2d(emb),
                                   nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    else:
        bottleneck = nn.Sequential(nn.Linear(shape[0], emb), nn.BatchNorm1d(emb), nn.ReLU())
    return nn.ModuleDict({"bottleneck": bottleneck, "fc": nn.Linear(emb, num_classes)})


@register_loss("byot")
class BYOT(DistillLoss):
    """Deepest exit: CE. Each shallow exit i: ``(1-alpha)*CE(y, q_i) + alpha*T^2*KL(q_C^T || q_i^T)
    + lambda*||F_i - F_C||^2`` where C is the deepest classifier and F its embedding (eq. 1-3).

    The feature distance is the per-element mean, so ``lam`` does not scale with the width:
    summed over an 800-d MLP embedding, lambda=0.03 made the hint ~50x the CE term (measured
    on mnist5k) and cost 7 points of accuracy.

    No teacher network. Exits sit on every intermediate feature but the embedding; each is
    recorded as ``exit<i>`` (the student's own head is the deepest exit).
    """
    requires_teacher = False

    def __init__(self, pair=None, alpha: float = 0.3, lam: float = 1.0, T: float = 3.0):
        super().__init__(pair)
        emb = pair.s_shapes[-1][0]
        self.exits = nn.ModuleList(exit_head(s, emb, pair.num_classes) for s in pair.s_shapes[:-1])
        self.alpha, self.lam, self.T = alpha, lam, T

    def _exits(self, feats):
        for head, f in zip(self.exits, feats):
            e = head["bottleneck"](f)
            yield full(e), full(head["fc"](e))

    def forward(self, s_out, t_out, y, x=None):
        logits, feats = s_out
        deep_z, deep_f = logits.detach(), feats[-1].detach()
        terms = {"ce": F.cross_entropy(logits, y), "exit_ce": 0.0, "exit_kd": 0.0, "exit_hint": 0.0}
        for e, z in self._exits(feats[:-1]):
            terms["exit_ce"] = terms["exit_ce"] + (1 - self.alpha) * F.cross_entropy(z, y)
            terms["exit_kd"] = terms["exit_kd"] + self.alpha * kd_div(z, deep_z, self.T)
            terms["exit_hint"] = terms["exit_hint"] + self.lam * (e - deep_f).pow(2).mean()
        return terms

    def extra_logits(self, x, s_out):
        return {f"exit{i + 1}": z for i, (_, z) in enumerate(self._exits(s_out[1][:-1]))}
