"""Figures of the study, one consistent style; ``save`` writes PNG + SVG with stable names.

The ``paper`` profile's figures go to ``figures/`` (committed with the published runs, #15);
every other profile's to ``reports/<profile>/figures/`` (generated, not committed), so exploring
on the quick profile never overwrites a published figure. Files are byte-stable: no date in the
SVG, fixed SVG ids, so re-running a notebook on the same runs leaves git clean."""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..core.util import REPO_ROOT

sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
plt.rcParams["svg.hashsalt"] = "kd-study"   # stable element ids, hence stable SVG bytes


def figures_dir(path=None, profile: str | None = "paper") -> Path:
    """``path``, else $KD_FIGURES_DIR, else the profile's figures directory (see the module doc)."""
    default = REPO_ROOT / "figures" if profile in (None, "paper") else REPO_ROOT / "reports" / str(profile) / "figures"
    d = Path(path or os.environ.get("KD_FIGURES_DIR") or default)
    d.mkdir(parents=True, exist_ok=True)
    return d


def caption(fig, text: str):
    """A one-line caption under the figure saying what to look at (kept in the saved files)."""
    for t in [t for t in fig.texts if t.get_gid() == "kd-caption"]:
        t.remove()
    fig.text(0.5, -0.01, text, ha="center", va="top", fontsize=8.5, style="italic", wrap=True, gid="kd-caption")
    return fig


def save(fig, name: str, profile: str | None = "paper", path=None, caption_text: str | None = None,
         vector: bool = True) -> None:
    """Write ``<figures>/<name>.png`` and, if ``vector``, ``.svg`` (with ``caption_text`` as the
    caption, if given); ``vector=False`` for raster content (image grids), where an SVG only
    wraps the pixels at three times the size. Returns nothing, so a notebook cell that ends with
    it does not echo a path of the machine that ran it."""
    if caption_text:
        caption(fig, caption_text)
    d = figures_dir(path, profile)
    # an image grid needs no more pixels than its images have (32 px shown at 0.9 in)
    fig.savefig(d / f"{name}.png", dpi=130 if vector else 80, bbox_inches="tight", metadata={"Software": None})
    if vector:
        fig.savefig(d / f"{name}.svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})


def sample_grid(data, n_per_class: int = 8):
    """A grid of training images: one row per class."""
    k = data.num_classes if data.num_classes <= 10 else 10
    fig, axes = plt.subplots(k, n_per_class, figsize=(n_per_class * 0.9, k * 0.9))
    for c in range(k):
        idx = (data.y["train"] == c).nonzero().flatten()[:n_per_class]
        for j in range(n_per_class):
            ax = axes[c, j]
            ax.axis("off")
            if j < len(idx):
                img = data.x["train"][idx[j]].permute(1, 2, 0).squeeze(-1).numpy()
                ax.imshow(img, cmap="gray" if img.ndim == 2 else None)
        axes[c, 0].set_title(data.classes[c], fontsize=7, loc="left")
    fig.suptitle(f"{data.name}: training samples")
    return caption(fig, "Eight training images per class, as stored (before normalisation).")


def learning_curves(hist: pd.DataFrame, runs=None, metric: str = "val_acc", title: str | None = None, ax=None):
    """Mean over seeds per epoch (band: +-1 sd) for each run, all on one axis.

    Epochs of a pre-training stage (FitNets' stage 1: hints only, the classifier untrained) are
    shaded and left out of the y-range, so they do not squash every other curve into one line."""
    h = hist if runs is None else hist[hist.run.isin(runs)]
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(h, x="epoch", y=metric, hue="run", errorbar="sd", marker="o", ax=ax)
    pre = h[h["stage"] == 1] if "stage" in h else h.iloc[:0]
    main = h.drop(pre.index)
    if len(pre):
        ax.axvspan(pre.epoch.min() - 0.5, pre.epoch.max() + 0.5, color="0.9", zorder=0,
                   label="FitNets stage 1 (hints only)")
    if len(main) and main[metric].notna().any():
        lo, hi = main[metric].min(), main[metric].max()
        pad = max(0.1 * (hi - lo), 0.002)
        ax.set_ylim(lo - pad, min(hi + pad, 1.0 + pad / 2))
    ax.set_title(title or metric)
    if "acc" in metric:   # in percent, as every table
        from matplotlib.ticker import PercentFormatter
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
        ax.set_ylabel(metric.replace("val_", "validation ").replace("test_", "test ").replace("_acc", " accuracy")
                      .replace("acc", "accuracy") + " (%)")
    if len(h):
        ax.legend(fontsize=8)
    else:   # e.g. a study with only its teacher so far
        ax.text(0.5, 0.5, "no runs yet", ha="center", va="center", transform=ax.transAxes)
    return caption(ax.figure, "Look at where each curve levels off and how far apart the runs end; bands show "
                              "the spread over seeds" + ("; shaded: FitNets' stage 1, not comparable" if len(pre) else "")
                   + ".")


def accuracy_ci(summary: pd.DataFrame, title: str = "Test accuracy (mean, 95% CI: seeds and test images)"):
    s = summary.sort_values("mean")
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(s) + 1.2))
    err = np.vstack([s["mean"] - s.ci_low, s.ci_high - s["mean"]]).clip(0)
    err = np.nan_to_num(err)
    ax.errorbar(s["mean"], np.arange(len(s)), xerr=err, fmt="o", capsize=3)
    ax.set_yticks(np.arange(len(s)), [f"{r} (n={n})" for r, n in zip(s.run, s.n)])
    from matplotlib.ticker import PercentFormatter
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
    ax.set_xlabel("test accuracy (%)")
    ax.set_title(title)
    return caption(fig, "Each interval counts seed-to-seed and test-image variance; whether two methods differ "
                        "is the paired verdict test's question, not the overlap's.")


def _si(v, _pos=None) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:g}{suffix}"
    return f"{v:g}"


def pareto(df: pd.DataFrame, x: str = "params", title: str | None = None, teacher_run: str = "teacher"):
    """Accuracy (%) against size or latency, one point per run (mean over seeds); the teacher is
    starred. Latency is one value per network, the mean over all its runs (as the tables show it:
    runs of one network differ only by timing noise). Log x-axis with ticks at 1-2-5 steps; labels
    placed by adjustText so they do not overlap."""
    from adjustText import adjust_text
    from matplotlib.ticker import FuncFormatter, LogLocator

    from .findings import per_network
    if x == "latency_ms":
        df = df.assign(latency_ms=per_network(df, "latency_ms"))
    agg = (df.groupby("run", as_index=False).agg(test_acc=("test_acc", "mean"), **{x: (x, "mean")})
           .sort_values(x).reset_index(drop=True))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    texts = []
    for _, r in agg.iterrows():
        is_t = r.run == teacher_run
        ax.scatter(r[x], 100 * r.test_acc, marker="*" if is_t else "o", s=160 if is_t else 40,
                   color="crimson" if is_t else "C0", zorder=3)
        texts.append(ax.text(r[x], 100 * r.test_acc, r.run, fontsize=7, zorder=4))
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_minor_locator(LogLocator(subs="auto"))
    ax.xaxis.set_major_formatter(FuncFormatter(_si))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda *_: ""))
    lo, hi = agg[x].min(), agg[x].max()
    ax.set_xlim(lo / 1.3, hi * 1.3)
    ax.set_xlabel({"latency_ms": "CPU latency per image, one value per network (ms)",
                   "params": "parameters"}.get(x, x))
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or f"accuracy vs {x}")
    adjust_text(texts, ax=ax, arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5})
    what = {"latency_ms": "latency", "params": "size"}.get(x, x)
    return caption(fig, f"Up and to the left is better: a run is worth its {what} only if no cheaper run is as "
                        f"accurate; the star is the teacher.")


def pvalue_heatmap(matrix: pd.DataFrame, title: str = "McNemar p-values (Holm-adjusted)"):
    fig, ax = plt.subplots(figsize=(0.5 * len(matrix) + 2.5, 0.45 * len(matrix) + 1.5))
    sns.heatmap(matrix, annot=True, fmt=".2g", cmap="rocket", vmin=0, vmax=1, ax=ax, annot_kws={"fontsize": 7},
                cbar_kws={"label": "p"})
    ax.set_title(title)
    return caption(fig, "Dark cells (small p) mark pairs of runs whose test predictions differ beyond chance.")


def reliability_diagrams(tables: dict[str, pd.DataFrame], eces: dict[str, float]):
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    for name, t in tables.items():
        ax.plot(t.confidence, t.accuracy, marker="o", label=f"{name} (ECE {eces[name]:.3f})")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7)
    ax.set_title("Reliability diagram (15 bins)")
    return caption(fig, "On the diagonal a model is as accurate as it is confident; below it, over-confident.")


def confusion(y, pred, classes, title: str):
    k = len(classes)
    m = np.zeros((k, k), dtype=int)
    np.add.at(m, (np.asarray(y), np.asarray(pred)), 1)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    sns.heatmap(m, annot=k <= 10, fmt="d", cmap="Blues", xticklabels=classes, yticklabels=classes, ax=ax,
                cbar=False, annot_kws={"fontsize": 7})
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return caption(fig, "Off-diagonal cells are the mistakes: which classes the model confuses with which.")
