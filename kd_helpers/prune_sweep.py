"""Distill, then prune: a trained student is pruned (``kd_helpers.core.prune``) and fine-tuned
through the same ``fit`` loop with CE or KD, as an ordinary run that starts from the pruned
weights (``experiment.Start``). Orchestration: it sits above runs; runs know nothing of it.
"""
from __future__ import annotations

from dataclasses import replace

from pathlib import Path

import pandas as pd

from .core import prune
from .core.evaluate import accuracy, compare_latency
from .experiment import Start, load_model, run, spec_for
from .core.models import count_params
from .store.names import run_name
from .store.presets import preset
from .store.results import MANIFEST, read_json, results_root, run_dir, verify_run
from .core.train import predict


def pruning_start(source_dir, source: str, pruning: str, amount: float, importance: str = "l1") -> Start:
    """Start a run from run ``source`` (its ``model.pt`` in ``source_dir``) pruned as asked; record the
    size and the test accuracy before fine-tuning."""
    if pruning not in prune.KINDS:
        raise ValueError(f"Unknown pruning '{pruning}'. Available: {', '.join(prune.KINDS)}")
    verify_run(source_dir)   # a damaged source is named, never pruned
    manifest = read_json(source_dir / MANIFEST)   # a published (compact) source names its original weights
    source_sha = (manifest.get("model.pt") or manifest.get("published_from", {}).get("model.pt", {}))["sha256"]

    def prepare(_fresh, data):
        model = load_model(source_dir / "model.pt", num_classes=data.num_classes, in_shape=data.input_shape)
        before = count_params(model)
        prune.prune(model, pruning, amount, data.input_shape, importance)
        logits, _ = predict(model, data, "test")
        return model, {"prune_source": source, "prune_kind": pruning, "prune_amount": amount,
                       "params_before_prune": before, "test_acc_before_ft": accuracy(logits, data.y["test"]),
                       "sparsity_before_ft": prune.sparsity(model)}

    def finish(model):
        if pruning == "unstructured":
            prune.make_permanent(model)
        return {"sparsity": prune.sparsity(model)}

    return Start({"from": source, "from_model_sha256": source_sha,
                  "prune": {"kind": pruning, "amount": amount, "importance": importance}},
                 prepare, finish)


def pruned_name(source: str, pruning: str, amount: float, finetune: str) -> str:
    """The pruned run's name (``store.names``): e.g. ``prune_kd__amount=0.5__finetune=ce__pruning=structured``."""
    return run_name(source, {"amount": float(amount), "finetune": finetune, "pruning": pruning}, "prune")


def prune_and_finetune(source: str, pruning: str, amount: float, finetune: str = "kd", *, dataset: str,
                       profile: str = "quick", seeds=(0,), epochs: int | None = None, results_dir=None,
                       data_dir=None, importance: str = "l1", wait: bool = True) -> list[dict]:
    """Prune run ``source`` (same seed) and fine-tune it with ``finetune`` ('ce' or 'kd') for
    ``epochs`` (default: the profile's ``prune_epochs``).

    Stored as run ``pruned_name(source, pruning, amount, finetune)`` in the results store.
    """
    root = results_root(results_dir, profile)
    out = []
    for s in seeds:
        src_dir = run_dir(root, dataset, source, s)
        src_model = read_json(src_dir / "config.json")["model"]
        spec = spec_for("baseline" if finetune == "ce" else finetune, dataset, profile, s, model=src_model,
                        epochs=epochs or preset(dataset, profile).prune_epochs)
        spec = replace(spec, run=pruned_name(source, pruning, amount, finetune), kind="prune")
        out.append(run(spec, results_dir, data_dir, profile=profile, wait=wait,
                       start=pruning_start(src_dir, source, pruning, amount, importance)))
    return out


def speed_check(results: pd.DataFrame, source: str, seed: int = 0, batches=(1, 64)) -> pd.DataFrame:
    """Re-measure the source and every model pruned from it, interleaved in one process, and
    return latency and speed-up (source latency / pruned latency) per model and batch size.
    Empty where the models have no weights (a published store keeps no student weights): each
    run's latency recorded at training time is then all there is."""
    # CE- and KD-fine-tuned models share the same shapes and sparsity: timing one of them suffices
    pruned = (results.get("prune_source") == source) & (results.method != "ce")
    rows = results[(results.seed == seed) & ((results.run == source) | pruned)]
    if not all((Path(d) / "model.pt").exists() for d in rows.dir):
        return pd.DataFrame(columns=["run", "kind", "amount", "batch", "latency_ms", "latency_std_ms", "speedup"])
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
