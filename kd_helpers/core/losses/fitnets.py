"""FitNets: Romero et al. 2014, "FitNets: Hints for Thin Deep Nets"."""
import torch.nn.functional as F

from .base import DistillLoss, connector, match_spatial, middle, register_loss
from .kd import kd_div


def hint_loss(guided, hint):
    """``1/2 * ||r(guided) - hint||^2`` averaged over elements (the paper's L_HT, eq. 3)."""
    guided, hint = match_spatial(guided, hint)
    return 0.5 * F.mse_loss(guided, hint)


@register_loss("fitnets")
class FitNets(DistillLoss):
    """Two stages inside one run.

    Stage 1 (the first ``stage1_frac`` of the epochs): only ``L_HT`` -- the student up to its guided layer plus a
    regressor ``r`` learn to predict the teacher's hint layer (the upper layers get no gradient).
    Stage 2: KD on the whole student, ``alpha*CE + (1-alpha)*T^2*KL`` (the paper's
    ``L_KD`` with annealed lambda is replaced by the study's KD loss, as in most re-implementations).
    ``stage1_frac=0`` with ``beta>0`` gives the one-stage variant many frameworks use:
    ``alpha*CE + (1-alpha)*KD + beta*L_HT`` in every epoch.
    Layers default to the middle hidden layer of each network (guided = student's, hint = teacher's).

    Hint weights in other codes (``L_HT`` here is half the mean squared error): the seed study's
    one-stage ``FitNet-like`` ``B * MSE`` with ``-B 2`` is ``beta = 4`` (the study's
    ``fitnets_1stage``); RepDistiller's / mdistiller's ``100 * MSE`` is ``beta = 200``; the authors'
    Theano ``HintCost.py`` (``0.5 * sum`` over features) is ``beta = D`` for D hint features. The
    regressor is conv3x3 + BN on maps (the references add a ReLU), a Linear on vectors.
    """
    reference = "chitraz/KnowledgeDistillationForModelCompression scripts/Utils.py (FitNet-like, -A 0.9 -B 2)"
    teacher_feats = True

    def __init__(self, pair=None, stage1_frac: float = 0.25, T: float = 4.0, alpha: float = 0.1,
                 beta: float = 0.0, hint_layer: int | None = None, guided_layer: int | None = None):
        super().__init__(pair)
        self.hint_layer = middle(len(pair.t_shapes)) if hint_layer is None else hint_layer
        self.guided_layer = middle(len(pair.s_shapes)) if guided_layer is None else guided_layer
        s_shape, t_shape = pair.s_shapes[self.guided_layer], pair.t_shapes[self.hint_layer]
        # the paper's regressor is convolutional for maps; a linear map for vectors
        self.regressor = connector(s_shape, t_shape, kernel=3)
        self.stage1_frac, self.T, self.alpha, self.beta = stage1_frac, T, alpha, beta
        self.stage = 2

    def start_epoch(self, epoch, epochs):
        self.stage = 1 if epoch < round(self.stage1_frac * epochs) else 2

    def epoch_info(self):
        return {"stage": self.stage}

    def forward(self, s_out, t_out, y, x=None, idx=None):
        hint = lambda: hint_loss(self.regressor(s_out[1][self.guided_layer]), t_out[1][self.hint_layer])
        if self.stage == 1:
            return {"hint": hint()}
        terms = {"ce": self.alpha * F.cross_entropy(s_out[0], y),
                 "kd": (1 - self.alpha) * kd_div(s_out[0], t_out[0], self.T)}
        if self.beta:
            terms["hint"] = self.beta * hint()
        return terms
