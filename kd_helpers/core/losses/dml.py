"""DML: Zhang et al. 2018, "Deep Mutual Learning" (CVPR)."""
import torch
import torch.nn.functional as F
from torch import nn

from .base import DistillLoss, full, register_loss


def mutual_kl(logits: list[torch.Tensor]) -> list[torch.Tensor]:
    """For each network i: ``1/(K-1) * sum_{j != i} KL(p_j || p_i)``, with p_j a fixed target."""
    logp = [F.log_softmax(z, dim=1) for z in logits]
    k = len(logits)
    return [sum(F.kl_div(logp[i], logp[j].detach(), reduction="batchmean", log_target=True)
                for j in range(k) if j != i) / (k - 1) for i in range(k)]


@register_loss("dml")
class DeepMutualLearning(DistillLoss):
    """``L_i = CE(y, p_i) + 1/(K-1) sum_j KL(p_j || p_i)`` for the student and ``K-1`` peers.

    The peers are fresh networks of the student's architecture owned by this loss, so the one
    training loop updates all K together (simultaneous rather than the paper's alternating
    updates: each network's gradient only comes from its own terms because targets are detached).
    No teacher. Each peer is evaluated and recorded as ``peer<i>``. With one peer this is the
    seed study's DML (``CE + B * KD_Hinton(T=1)`` for each network, ``-A 1 -B 1``); ``beta`` is
    its ``-B``, the weight of every KL term (the paper's is 1, the default).
    """
    reference = "chitraz/KnowledgeDistillationForModelCompression scripts/Utils.py (mode DML, -A 1 -B 1)"
    requires_teacher = False

    MAX_PEERS = 8   # each peer is a whole student in memory and in every step

    def __init__(self, pair=None, peers: int = 1, beta: float = 1.0):
        super().__init__(pair)
        if pair is None or pair.make_student is None:
            raise ValueError("dml needs pair.make_student to build its peer networks.")
        if not 1 <= peers <= self.MAX_PEERS:
            raise ValueError(f"dml: peers={peers} is outside 1..{self.MAX_PEERS} (each peer is another student "
                             f"trained in every step; the paper uses 1-4).")
        self.beta = beta
        self.peers = nn.ModuleList(pair.make_student() for _ in range(peers))

    def forward(self, s_out, t_out, y, x=None, idx=None):
        logits = [s_out[0]] + [full(peer(x)[0]) for peer in self.peers]
        kl = mutual_kl(logits)
        terms = {"ce": F.cross_entropy(logits[0], y), "kl": self.beta * kl[0]}
        terms["peer_ce"] = sum(F.cross_entropy(z, y) for z in logits[1:])
        terms["peer_kl"] = self.beta * sum(kl[1:])
        return terms

    def extra_logits(self, x, s_out):
        return {f"peer{i + 1}": peer(x)[0] for i, peer in enumerate(self.peers)}
