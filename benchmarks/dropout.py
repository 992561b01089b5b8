"""The tuned study's constant factors, as ratios measured in one run (nothing else running).

1. Dropout on the CPU: ``models.Dropout`` (15-bit draws from 64-bit random words) against
   ``nn.Dropout`` (one Bernoulli draw per element): the op alone on a 256x800 activation beside
   the bf16 matmul before it, and whole training steps of the MNIST student (10% input, 30%
   hidden dropout) and teacher (20% / 50%) at batch 256 in the study's precision, one thread.
2. A tuning trial (validation only, ``TrainConfig(test_curve=False)``) against a reported run of
   the same length (validation and test every epoch), through ``fit`` on MNIST.
3. A projection of the tuned study's CPU-hours: each published run's recorded training time
   (reports/paper/store), per dataset and method, times the runs the tuned study plans, with the
   two savings above applied where they apply.

    python benchmarks/dropout.py                 # prints the tables (needs MNIST under KD_DATA_DIR)
    python benchmarks/dropout.py --update-readme # also rewrites the block in benchmarks/README.md
    python benchmarks/dropout.py --tiny          # seconds, on generated data (the tests' format check)
"""
from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from kd_helpers.core.data import DataConfig, load_dataset
from kd_helpers.core.losses import build_loss
from kd_helpers.core.models import Dropout, create_model
from kd_helpers.store.results import load_histories, load_results
from kd_helpers.core.train import TrainConfig, fit
from kd_helpers.core.util import REPO_ROOT, autocast_dtype, cpu_model, dtype_name

README = Path(__file__).with_name("README.md")
START, END = "<!-- dropout:start -->", "<!-- dropout:end -->"

# the tuned study's plan (the fair-comparison issue): trials per method and seeds per tuned
# configuration, every method and its no-KD baseline
PLAN = {"mnist": {"trials": 20, "seeds": 10}, "cifar10": {"trials": 12, "seeds": 8}}


def with_torch_dropout(model: nn.Module) -> nn.Module:
    """The same network with ``nn.Dropout`` wherever it has ``models.Dropout`` (the old path)."""
    for name, child in model.named_children():
        if isinstance(child, Dropout):
            setattr(model, name, nn.Dropout(child.p))
        else:
            with_torch_dropout(child)
    return model


def per_call_ms(f, reps: int) -> float:
    f()
    t0 = time.perf_counter()
    for _ in range(reps):
        f()
    return (time.perf_counter() - t0) / reps * 1e3


def op_times(reps: int) -> dict:
    dtype = autocast_dtype("auto", torch.device("cpu")) or torch.float32
    x = torch.randn(256, 784).to(dtype)
    w = torch.randn(800, 784).to(dtype)
    h = torch.randn(256, 800).to(dtype)
    fast = Dropout(0.3).train()
    return {"dtype": dtype_name(dtype),
            "matmul 256x784x800": per_call_ms(lambda: x @ w.t(), reps),
            "nn.Dropout(0.3) on 256x800": per_call_ms(lambda: nn.functional.dropout(h, 0.3, True), reps),
            "models.Dropout(0.3) on 256x800": per_call_ms(lambda: fast(h), reps)}


def without_dropout(model: nn.Module) -> nn.Module:
    for name, child in model.named_children():
        if isinstance(child, Dropout):
            setattr(model, name, nn.Identity())
        else:
            without_dropout(child)
    return model


def step_throughput(name: str, which: str, steps: int, batch: int = 256) -> float:
    """Training images/s of ``name`` (forward, CE, backward, fused Adam) in the study's precision,
    with ``which`` dropout: "torch" (nn.Dropout), "fast" (models.Dropout) or "none"."""
    torch.manual_seed(0)
    model = create_model(name, 10, in_shape=(1, 28, 28))
    model = {"torch": with_torch_dropout, "fast": lambda m: m, "none": without_dropout}[which](model)
    opt = torch.optim.Adam(model.parameters(), 1e-3, fused=True)
    dtype = autocast_dtype("auto", torch.device("cpu"))
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))

    def step():
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss = nn.functional.cross_entropy(model(x)[0].float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return batch / (per_call_ms(step, steps) / 1e3)


def trial_vs_run(data_dir, epochs: int, tiny: bool) -> dict:
    """Seconds of ``fit`` with validation only against validation and test every epoch."""
    data = load_dataset("digits" if tiny else "mnist", data_dir,
                        DataConfig() if tiny else DataConfig(val_size=6000, limit_train=18000))
    out = {}
    for label, curve in (("trial (validation only)", False), ("reported run (validation + test)", True)):
        torch.manual_seed(0)
        model = create_model("mlp_student", data.num_classes, in_shape=data.input_shape)
        cfg = TrainConfig(epochs=epochs, precision="auto", test_curve=curve)
        t0 = time.perf_counter()
        fit(model, build_loss("ce"), data, cfg, progress=False)
        out[label] = time.perf_counter() - t0
    return out


def projection(dropout_speedup: dict) -> list[dict]:
    """CPU-hours of the tuned study from the published runs' recorded training times: every
    method and baseline of the published table, ``trials + seeds`` runs each; a trial saves the
    test curve's share of a run (the published histories' evaluation time, split by image count),
    a network with dropout runs at the measured speed-up."""
    store = REPO_ROOT / "reports" / "paper" / "store"
    df, hist = load_results(store), load_histories(store)
    study = lambda d: d[d.dataset.isin(PLAN) & ~d.run.str.startswith(("prune_", "ablation_")) & (d.run != "teacher")]
    df, hist = study(df), study(hist)
    rows = []
    for ds, plan in PLAN.items():
        g, h = df[df.dataset == ds], hist[hist.dataset == ds]
        test_share = float(h.eval_s.sum() / h.time_s.sum() * (g.n_test / (g.n_test + g.n_val)).mean())
        per_method = g.groupby("run").agg(train_s=("train_s", "mean"), model=("model", "first"))
        scale = per_method.model.map(lambda m: 1 / dropout_speedup.get(m, 1.0))
        run_h = (per_method.train_s * scale).sum() / 3600
        before = (per_method.train_s.sum() / 3600) * (plan["trials"] + plan["seeds"])
        after = run_h * (plan["trials"] * (1 - test_share) + plan["seeds"])
        rows.append({"dataset": ds, "methods (incl. baselines)": len(per_method), **plan, "test share": test_share,
                     "CPU-h at published costs": before, "CPU-h with both savings": after})
    return rows


def table(ops: dict, steps: dict, trial: dict, proj: list[dict]) -> str:
    lines = [f"| op ({ops['dtype']}, one thread) | ms per call |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in ops.items() if k != "dtype"]
    lines += ["", "| training step, batch 256, one thread | nn.Dropout (img/s) | models.Dropout (img/s) | ratio | "
                  "no dropout at all (img/s) | its ratio: the ceiling | target |", "|---|---|---|---|---|---|---|"]
    for name, (old, new, none) in steps.items():
        target = ">= 1.4x" if name == "mlp_student" else ""
        lines.append(f"| {name} | {old:,.0f} | {new:,.0f} | {new / old:.2f}x | {none:,.0f} | {none / old:.2f}x | {target} |")
    (t_label, t), (r_label, r) = trial.items()
    lines += ["", "| measure | value |", "|---|---|",
              f"| {t_label}, s | {t:.1f} |", f"| {r_label}, s | {r:.1f} |", f"| trial / reported run | {t / r:.2f}x |"]
    lines += ["", "| dataset | methods and baselines | trials each | seeds each | test curve's share of a run | "
                  "CPU-h at published costs | CPU-h with both savings |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {p['dataset']} | {p['methods (incl. baselines)']} | {p['trials']} | {p['seeds']} | "
              f"{100 * p['test share']:.1f}% | {p['CPU-h at published costs']:.1f} | {p['CPU-h with both savings']:.1f} |"
              for p in proj]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--update-readme", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)   # the study's workers run one thread each
    reps, steps_n, epochs = (5, 3, 1) if args.tiny else (200, 60, 3)
    ops = op_times(reps)
    # the three variants in turn, several rounds, the median of each: a shared machine drifts
    rounds = 1 if args.tiny else 5
    kinds = ("torch", "fast", "none")
    steps = {name: tuple(statistics.median(r) for r in zip(*[[step_throughput(name, k, steps_n) for k in kinds]
                                                             for _ in range(rounds)]))
             for name in ("mlp_student", "mlp_teacher")}
    trial = trial_vs_run(args.data_dir, epochs, args.tiny)
    speedup = {name: new / old for name, (old, new, _) in steps.items()}
    proj = projection(speedup) if not args.tiny else []
    body = (f"_Generated by `python benchmarks/dropout.py --update-readme`; machine: {cpu_model()}, torch "
            f"{torch.__version__}, one thread; training steps: the median of {rounds} rounds of the three variants "
            f"in turn._\n\n{table(ops, steps, trial, proj)}")
    print(body)
    if args.update_readme:
        text = README.read_text()
        block = f"{START}\n{body}\n{END}"
        text = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S) \
            if START in text else text.rstrip("\n") + "\n\n## The tuned study's constant factors\n\n" + block + "\n"
        README.write_text(text)
    return {"ops": ops, "steps": steps, "trial": trial, "projection": proj}


if __name__ == "__main__":
    main()
