"""Distill-then-prune: unstructured (global L1 magnitude) and structured (channel/neuron)
pruning of a trained student, then fine-tuning through the same ``fit`` loop with CE or KD.

Structured pruning uses Torch-Pruning's dependency graph (Fang et al. 2023, "DepGraph"), so
coupled layers (residual adds, conv -> flatten -> linear) shrink together and the pruned
network really is smaller. Unstructured pruning zeroes weights behind masks
(``torch.nn.utils.prune``); the compute stays dense, which the latency columns show.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.utils.prune as tprune
from torch import nn

from .evaluate import accuracy
from .models import count_params

KINDS = ("unstructured", "structured")


def _prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def unstructured(model: nn.Module, amount: float) -> None:
    """Global L1 magnitude pruning of every Linear/Conv weight to ``amount`` sparsity.

    Masks stay attached (``weight = weight_orig * mask``) so fine-tuning keeps pruned weights at 0.
    """
    tprune.global_unstructured(_prunable(model), pruning_method=tprune.L1Unstructured, amount=amount)


def make_permanent(model: nn.Module) -> None:
    for m, name in _prunable(model):
        if tprune.is_pruned(m) and hasattr(m, f"{name}_mask"):
            tprune.remove(m, name)


def structured(model: nn.Module, ratio: float, in_shape, importance: str = "l1") -> None:
    """Remove ``ratio`` of the channels/neurons of every prunable layer but the classifier."""
    import torch_pruning as tp
    imp = {"l1": tp.importance.MagnitudeImportance(p=1),
           "l2": tp.importance.MagnitudeImportance(p=2),
           "bn": tp.importance.BNScaleImportance()}[importance]
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    was = model.training
    model.eval()
    pruner = tp.pruner.MagnitudePruner(model, torch.randn(2, *in_shape), importance=imp, pruning_ratio=ratio,
                                       ignored_layers=[classifier], output_transform=lambda out: out[0])
    pruner.step()
    model.train(was)


def sparsity(model: nn.Module) -> float:
    """Share of zero weights over all Linear/Conv weights (masks applied)."""
    ws = [getattr(m, n) for m, n in _prunable(model)]
    return float(sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws))


@dataclass
class Pruning:
    kind: str
    amount: float
    metrics: dict = field(default_factory=dict)

    @property
    def structural(self) -> bool:
        return self.kind == "structured"

    def finalize(self, model: nn.Module) -> None:
        if self.kind == "unstructured":
            make_permanent(model)
        self.metrics["sparsity"] = sparsity(model)


def apply_pruning(model: nn.Module, cfg: dict, data, in_shape) -> Pruning:
    """Prune ``model`` in place as ``cfg = {"kind", "amount", "importance"}`` says; record the
    size and the test accuracy before fine-tuning."""
    kind, amount = cfg.get("kind"), float(cfg.get("amount", 0.5))
    if kind not in KINDS:
        raise ValueError(f"Unknown pruning kind '{kind}'. Available: {', '.join(KINDS)}")
    p = Pruning(kind, amount, {"prune_kind": kind, "prune_amount": amount, "params_before_prune": count_params(model)})
    if kind == "unstructured":
        unstructured(model, amount)
    else:
        structured(model, amount, in_shape, cfg.get("importance", "l1"))
    from .train import predict
    logits, _ = predict(model, data, "test")
    p.metrics["test_acc_before_ft"] = accuracy(logits, data.y["test"])
    p.metrics["sparsity_before_ft"] = sparsity(model)
    return p


def prune_and_finetune(source: str, kind: str, amount: float, finetune: str = "kd", *, dataset: str,
                       profile: str = "quick", seeds=(0,), epochs: int | None = None, results_dir=None,
                       data_dir=None, importance: str = "l1") -> list[dict]:
    """Prune run ``source`` (same seed) and fine-tune it with ``finetune`` ('ce' or 'kd') for
    ``epochs`` (default: the profile's ``prune_epochs``).

    Stored as run ``prune_<kind>_<amount>_<finetune>_<source>`` in the results store.
    """
    from dataclasses import replace

    from .experiment import RunSpec, run
    from .presets import preset
    from .results import read_json, results_root, run_dir
    p = preset(dataset, profile)
    root = results_root(results_dir, profile)
    out = []
    for s in seeds:
        src_cfg = read_json(run_dir(root, dataset, source, s) / "config.json")
        train = replace(p.train, epochs=epochs or p.prune_epochs)
        hp = p.loss.get(finetune, {})
        spec = RunSpec(dataset, finetune, src_cfg["model"], seed=s,
                       run=f"prune_{kind[:6]}_{int(round(amount * 100))}_{finetune}_{source}",
                       teacher="teacher" if finetune != "ce" else None, loss=hp, train=train, data=p.data,
                       init_from=source, prune={"kind": kind, "amount": amount, "importance": importance})
        out.append(run(spec, results_dir, data_dir, profile=profile))
    return out


def speed_check(results, source: str, seed: int = 0, batches=(1, 64)):
    """Re-measure the source and every model pruned from it, interleaved in one process, and
    return latency and speed-up (source latency / pruned latency) per model and batch size."""
    import pandas as pd

    from .evaluate import compare_latency
    from .experiment import load_model
    # CE- and KD-fine-tuned models share the same shapes and sparsity: timing one of them suffices
    pruned = (results.get("prune_source") == source) & (results.method != "ce")
    rows = results[(results.seed == seed) & ((results.run == source) | pruned)]
    models = {r.run: load_model(f"{r.dir}/model.pt").eval() for r in rows.itertuples()}
    shape = tuple(rows.input_shape.iloc[0])
    out = []
    for b in batches:
        lat = compare_latency(models, shape, batch=b, number=20 if b == 1 else 3)
        for r in rows.itertuples():
            out.append({"run": r.run, "kind": getattr(r, "prune_kind", None), "amount": getattr(r, "prune_amount", None),
                        "batch": b, "latency_ms": lat[r.run][0], "latency_std_ms": lat[r.run][1],
                        "speedup": lat[source][0] / lat[r.run][0]})
    return pd.DataFrame(out)
