"""Result tables in the reference study's format (analysis: reads runs as ``load_results`` gives them)."""
from __future__ import annotations

import pandas as pd

from .findings import REFERENCE, accuracy_summary, per_network, verdict_cell
from .stats import mean_ci, relative_to_teacher


def results_table(df: pd.DataFrame, dataset: str, vs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Model | Errors | Accuracy | Params | Latency (ms) | ... per run, averaged over seeds.

    With ``vs`` (``findings.versus_baselines``), a column with each run's verdict against its
    baseline; the reference study's accuracy where it has that row; the training precision."""
    g = relative_to_teacher(df[df.dataset == dataset])
    g = g.assign(latency_ms=per_network(g, "latency_ms"))
    verdicts = {} if vs is None or vs.empty else vs.set_index("run")
    cis = accuracy_summary(g).set_index("run")   # seeds and test images, as the verdicts
    ref = REFERENCE.get(dataset, {})
    rows = []
    for run, r in g.groupby("run", sort=False):
        m, sd, _, _, n = mean_ci(r.test_acc)
        ci = cis.loc[run]
        row = {"Model": run, "Arch": r.model.iloc[0], "Seeds": n,
               "Errors": f"{r.test_errors.mean():.1f}" if n > 1 else f"{int(r.test_errors.iloc[0])}",
               "Accuracy": f"{100 * m:.2f} ± {100 * sd:.2f}" if n > 1 else f"{100 * m:.2f}",
               "95% CI": f"[{100 * ci['ci_low']:.2f}, {100 * ci['ci_high']:.2f}]",
               "Params": int(r.params.mean()),
               "Latency (ms)": f"{r.latency_ms.mean():.3f}",
               "Retention %": f"{r.retention_pct.mean():.1f}" if "retention_pct" in r else "",
               "Train FLOPs": f"{r.train_flops.mean():.2e}" if "train_flops" in r else "",
               "Train time (s)": f"{r.train_s.mean():.1f}" if "train_s" in r else "",
               "Precision": ", ".join(sorted(set(r.precision.astype(str)))),   # load_results: fp32/bf16/fp16
               "_acc": m}
        if vs is not None:
            row["vs baseline"] = verdict_cell(verdicts.loc[run]) if run in getattr(verdicts, "index", []) else ""
        if ref:
            row["Reference"] = f"{ref[run][0]:.2f}" if run in ref else ""
        rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    return out.sort_values("_acc", ascending=False).drop(columns="_acc").reset_index(drop=True)


CI_LEGEND = ("95% CI: of the accuracy, counting seeds and test images (the verdict test's standard error; test "
             "images only with one seed)")
