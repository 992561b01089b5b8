"""The shared second half of every method notebook: curves, the table with each run's verdict
against its baseline, and a closing paragraph generated from the numbers.

The executed notebook carries the key numbers in the metadata of its last output
(``kd_summary``), which is what the notebook tests assert.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from . import findings, plots
from ..core.losses import describe_method
from .tables import results_table
from ..store.results import load_histories, load_results, of_kind


def run_names(runs) -> list[str]:
    """Run names from what ``distill`` returned (a list per call), in order, without repeats."""
    names = []
    for r in runs:
        for one in (r if isinstance(r, list) else [r]):
            name = one["config"]["run"] if isinstance(one, dict) else str(one)
            if name not in names:
                names.append(name)
    return names


def method_report(runs, *, dataset: str, profile: str, results_dir=None, alpha: float = 0.05,
                  figure: str | None = None, **_) -> dict:
    """Show the learning curves, the results table and the generated interpretation of ``runs``
    (what the notebook's ``distill`` calls returned) and return the summary it records."""
    names = run_names(runs)
    store = load_results(results_dir, profile)
    store = of_kind(store[store.dataset == dataset], "study")
    df = store[store.run.isin(names) | (store.run == "teacher")]
    hist = load_histories(results_dir, profile)
    hist = hist[(hist.dataset == dataset) & hist.run.isin(names)]

    display(Markdown("### Learning curves\nValidation accuracy per epoch, mean over seeds (band: ±1 sd). "
                     "The test set is only reported, never used for a choice."))
    fig = plots.learning_curves(hist, metric="val_acc", title=f"{dataset}: validation accuracy")
    if figure:
        plots.save(fig, figure, profile)
    display(fig)
    plt.close(fig)

    methods = list(dict.fromkeys(df[df.run.isin(names)].method))
    display(Markdown("### Definition\n" + "\n\n".join(describe_method(m) for m in methods)))
    # the verdict family is the dataset's methods in the store, as in the report and the README
    vs_all = findings.versus_baselines(store, [r for r in store.run.unique() if r != "teacher"], alpha)
    vs = vs_all[vs_all.run.isin(names)] if len(vs_all) else vs_all
    family = int(vs_all.family.iloc[0]) if len(vs_all) else 0
    display(Markdown("### Results\nTest set, mean ± std over seeds (%), with the teacher for reference. "
                     f"{findings.VERDICT_LEGEND}; here Holm is over the {family} method(s) of {dataset} judged in "
                     "the results store, as in the report."))
    table = results_table(df, dataset, vs)
    display(table)
    extra = [c for c in df.columns if c.startswith("test_acc_") and df[c].notna().any()]
    if extra:  # DML peers, BYOT exits: every classifier a method trains is reported
        display(Markdown("Extra classifiers trained by a method (test accuracy, mean over seeds):"))
        display(df.dropna(subset=extra, how="all").groupby("run")[["test_acc", *extra]].mean().round(4))
    text = findings.verdicts_text(vs, dataset, alpha) if not vs.empty else findings.describe_plain(df)
    summary = {"dataset": dataset, "runs": names, "table_runs": table.Model.tolist(),
               "verdicts": {} if vs.empty else dict(zip(vs.run, vs.verdict)),
               "test_acc": df.groupby("run").test_acc.mean().round(6).to_dict()}
    display(Markdown(f"### What this shows\n{text}"), metadata={"kd_summary": summary})
    return summary
