"""What the tuning found (notebook 14_tuning, the report): read from the store only, the Optuna
journals (``<store>/_tuning/<dataset>/<variant>.journal``) and the finished runs.

The tuned rows are the runs of kind ``tuned`` (the best trial's configuration retrained on the
tuned seeds; each records the variant it tunes as its ``role``), the as-published rows the study
runs of that variant (notebooks 02-13). Each method is compared with the
no-KD baseline of its own network under the same protocol: tuned with tuned, as published with
as published (``findings.versus_baselines``: the seed-and-image test, Holm within a block).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
# optuna imports tqdm.auto, which warns in a notebook kernel without ipywidgets (with this
# machine's site-packages path in the executed notebook); its progress bars are not used here
warnings.filterwarnings("ignore", message="IProgress not found")
import optuna  # noqa: E402
import pandas as pd

from . import findings
from .plots import save
from ..store.names import run_name
from ..store.results import dataset_dir, load_results, of_kind, results_root
from ..store.presets import TUNED_TEACHER

_DONE = {"COMPLETE", "PRUNED", "FAIL"}


def journals(root, dataset: str) -> dict[str, Path]:
    """variant -> its study's journal, in the order the studies were started."""
    files = (Path(root) / "_tuning" / dataset_dir(".", dataset).name).glob("*.journal")
    return {f.stem: f for f in sorted(files, key=lambda f: f.stat().st_mtime)}


def studies(root, dataset: str) -> dict[str, optuna.Study]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = {}
    for name, path in journals(root, dataset).items():
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
        out[name] = optuna.load_study(study_name=f"{dataset}/{name}", storage=storage)
    return out


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def trials_summary(dataset: str, profile: str = "quick", results_dir=None) -> pd.DataFrame:
    """Per variant: trials told by state, epochs trained (pruning's saving), the precision its
    finished trials trained in (the machine's: a study tuned across machines mixes them), the
    best validation accuracy against trial 0's (the as-published configuration) and the best values."""
    rows = []
    runs = load_results(results_dir, profile, trials=True)
    runs = of_kind(runs[runs.dataset == dataset], "trial") if len(runs) else runs
    for name, study in studies(results_root(results_dir, profile), dataset).items():
        trials = study.get_trials(deepcopy=False)
        states = pd.Series([t.state.name for t in trials]).value_counts()
        mine = {run_name(name, {"trial": f"{t.number:03d}"}, "trial") for t in trials}
        precisions = runs[runs.run.isin(mine)].precision.value_counts().sort_index() if len(runs) else {}
        complete = [t for t in trials if t.state.name == "COMPLETE"]
        first = trials[0] if trials and trials[0].state.name == "COMPLETE" else None
        best = max(complete, key=lambda t: t.value) if complete else None
        rows.append({"variant": name, "trials": int(sum(states.get(s, 0) for s in _DONE)),
                     "complete": int(states.get("COMPLETE", 0)), "pruned": int(states.get("PRUNED", 0)),
                     "failed": int(states.get("FAIL", 0)), "running": int(states.get("RUNNING", 0)),
                     "epochs": int(sum(len(t.intermediate_values) for t in trials)),
                     "precision": ", ".join(f"{p} {n}" for p, n in precisions.items()),
                     "val trial 0 %": 100 * first.value if first else np.nan,
                     "val best %": 100 * best.value if best else np.nan,
                     "best trial": best.number if best else None,
                     "best values": ", ".join(f"{k}={_fmt(v)}" for k, v in best.params.items()) if best else ""})
    out = pd.DataFrame(rows)
    if not out.empty:
        out["gain on val (pts)"] = out["val best %"] - out["val trial 0 %"]
    return out.set_index("variant") if not out.empty else out


def history_figure(dataset: str, profile: str = "quick", results_dir=None, figure: str | None = None) -> None:
    """Every variant's optimisation history in one axes (``optuna.visualization.matplotlib``)."""
    found = studies(results_root(results_dir, profile), dataset)
    told = [s for s in found.values() if any(t.state.name == "COMPLETE" for t in s.get_trials(deepcopy=False))]
    if not told:
        print("No finished trials yet.")
        return
    with warnings.catch_warnings():   # "experimental" since Optuna 2.2: a note for developers, not readers
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = optuna.visualization.matplotlib.plot_optimization_history(told, target_name="validation accuracy")
    ax.figure.set_size_inches(10, 5)
    ax.set_title(f"{dataset}: validation accuracy of each trial, and the best so far, per variant")
    ax.legend(fontsize=7, ncol=3, loc="lower right")
    if figure:
        save(ax.figure, figure, profile)


def importances(dataset: str, profile: str = "quick", results_dir=None) -> pd.DataFrame:
    """Each variant's hyper-parameter importances (Optuna's fANOVA evaluator, over its complete
    trials; a variant with fewer than 3 is left out)."""
    rows = {}
    for name, study in studies(results_root(results_dir, profile), dataset).items():
        if sum(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)) < 3:
            continue
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        rows[name] = optuna.importance.get_param_importances(study, evaluator=evaluator)
    return pd.DataFrame(rows).T


def importance_figure(dataset: str, profile: str = "quick", results_dir=None, figure: str | None = None) -> None:
    """A heat map of ``importances``: which knobs the validation accuracy depended on."""
    imp = importances(dataset, profile, results_dir)
    if imp.empty:
        print("Too few finished trials for importances yet.")
        return
    import seaborn as sns
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * imp.shape[1], 0.9 + 0.35 * len(imp)))
    sns.heatmap(imp, annot=True, fmt=".2f", cmap="Blues", vmin=0, vmax=1, cbar=False, ax=ax)
    ax.set_title(f"{dataset}: share of the validation accuracy's variance per hyper-parameter (fANOVA)")
    ax.set_xlabel("")
    if figure:
        save(fig, figure, profile)


def _against_tuned(df: pd.DataFrame, run: str) -> str | None:
    """A tuned run's baseline: the tuned no-KD run of the same network (found through the variants
    the tuned runs record, ``role``)."""
    df = df[df.role.notna()]
    role = df[df.run == run].role
    base = findings.baseline_for(df.assign(run=df.role), role.iloc[0]) if len(role) else None
    return None if base is None else df[df.role == base].run.iloc[0]


def tuned_vs_published(dataset: str, profile: str = "quick", results_dir=None, seeds=None,
                       tuned_seeds=None, alpha: float = 0.05) -> pd.DataFrame:
    """Per method: the tuned row (tuned seeds) and the as-published row (``seeds``), each with its
    accuracy, its difference to its own baseline, the verdict, and what tuning changed."""
    df = load_results(results_dir, profile)
    df = df[df.dataset == dataset]
    tuned_names = sorted(of_kind(df, "tuned").run.unique())
    tuned = df[df.run.isin(tuned_names) & (df.seed.isin(tuned_seeds) if tuned_seeds else True)]
    if tuned.empty:
        return pd.DataFrame()
    findings.one_training(tuned, f"{dataset}'s tuned table")   # its teacher included
    # the variant each tuned run retrains (its role); the teacher is distilled from, not tuned
    tuned_of = dict(tuned[tuned.run != TUNED_TEACHER].drop_duplicates("run")[["role", "run"]].values)
    if not tuned_of:
        return pd.DataFrame()   # only the teacher so far
    tuned_names, variants = sorted(tuned_of.values()), sorted(tuned_of)
    study = of_kind(df, "study")
    published = study[study.run.isin(variants) & (study.seed.isin(seeds) if seeds else True)]
    blocks = {"tuned": findings.versus_baselines(tuned, tuned_names, alpha, against=_against_tuned),
              "as published": findings.versus_baselines(published, variants, alpha)}
    acc = {"tuned": findings.accuracy_summary(tuned), "as published": findings.accuracy_summary(published)}
    rows = []
    for v in variants:
        row = {"variant": v}
        for label, run in (("tuned", tuned_of[v]), ("as published", v)):
            a = acc[label]
            a = a[a.run == run] if len(a) else a
            vs = blocks[label]
            vs = vs[vs.run == run] if not vs.empty else vs
            row[f"{label} seeds"] = int(a.n.iloc[0]) if len(a) else 0
            row[f"{label} acc %"] = 100 * a["mean"].iloc[0] if len(a) else np.nan
            row[f"{label} vs baseline"] = findings.verdict_cell(vs.iloc[0]) if len(vs) else ""
        row["tuning changed (pts)"] = row["tuned acc %"] - row["as published acc %"]
        rows.append(row)
    return pd.DataFrame(rows).set_index("variant")


def interpretation(trials: pd.DataFrame, comparison: pd.DataFrame, dataset: str) -> str:
    """A generated reading of the tables above (nothing typed by hand)."""
    if trials.empty:
        return f"No tuning has run on {dataset} yet."
    done = trials[trials.trials >= trials.trials.max()]
    out = [f"**{dataset}**: {len(trials)} variants tuned, {int(trials.trials.sum())} trials told "
           f"({int(trials.pruned.sum())} stopped by the pruner, {int(trials.failed.sum())} failed)."]
    gains = trials["gain on val (pts)"].dropna()
    if len(gains):
        top = gains.idxmax()
        out.append(f"On validation, tuning gained {gains.median():+.2f} points (median over variants) over the "
                   f"as-published configuration; most for `{top}` ({gains[top]:+.2f}).")
    if len(done) < len(trials):
        n = len(trials) - len(done)
        out.append(f"{n} {'study has' if n == 1 else 'studies have'} not used {'its' if n == 1 else 'their'} whole budget yet.")
    kinds = sorted({p.split()[0] for cell in trials.precision for p in cell.split(", ") if p})
    if len(kinds) > 1:   # trials train in their machine's precision; the tuned seeds in one
        mixed = [f"`{v}`" for v, cell in trials.precision.items() if "," in cell]
        out.append(f"Trials trained in {' and '.join(kinds)} (their machines'; within one study: "
                   f"{', '.join(mixed) or 'none'}): a configuration chosen across precisions is retrained on "
                   f"the tuned seeds in the table's one precision.")
    if not comparison.empty:
        better = [v for v in comparison.index if str(comparison.loc[v, "tuned vs baseline"]).startswith("better")]
        worse = [v for v in comparison.index if str(comparison.loc[v, "tuned vs baseline"]).startswith("worse")]
        out.append(f"Tuned against tuned, by the seed-and-image test: better than its baseline "
                   f"{', '.join(f'`{v}`' for v in better) or 'none'}; worse {', '.join(f'`{v}`' for v in worse) or 'none'}.")
    return " ".join(out)


def show_interpretation(trials: pd.DataFrame, comparison: pd.DataFrame, dataset: str) -> dict:
    """Display ``interpretation`` with what it rests on recorded in the output's metadata
    (``kd_tuning``: what the notebook tests assert); return that record."""
    from IPython.display import Markdown, display
    record = {"dataset": dataset,
              "trials": {v: int(n) for v, n in trials.trials.items()} if not trials.empty else {},
              "pruned": {v: int(n) for v, n in trials.pruned.items()} if not trials.empty else {},
              "best_val": {v: float(x) for v, x in trials["val best %"].items()} if not trials.empty else {},
              "tuned_seeds": {v: int(n) for v, n in comparison["tuned seeds"].items()} if not comparison.empty else {},
              "tuned_acc": {v: float(x) for v, x in comparison["tuned acc %"].items()} if not comparison.empty else {}}
    display(Markdown(f"### What this shows\n{interpretation(trials, comparison, dataset)}"), metadata={"kd_tuning": record})
    return record


def status_line(dataset: str, profile: str = "quick", results_dir=None) -> str:
    """Where ``dataset``'s tuning stands: studies started, trials told of the budget, tuned rows."""
    from ..store.presets import tuned_variants, tuning_budget
    trials = trials_summary(dataset, profile, results_dir)
    n_trials, n_seeds = tuning_budget(dataset, profile)
    n_studies = len(tuned_variants(dataset))
    if trials.empty:
        return f"{dataset}: tuning not started ({n_studies} studies of {n_trials} trials planned)."
    df = load_results(results_dir, profile)
    tuned = of_kind(df[df.dataset == dataset], "tuned")
    teacher = "trained" if TUNED_TEACHER in set(tuned.run) else "not trained yet"
    tuned = tuned[tuned.run != TUNED_TEACHER]   # distilled from, not a tuned configuration
    return (f"{dataset}: the tuned study's teacher {teacher}, {len(trials)} of {n_studies} studies started, {int(trials.trials.sum())} of "
            f"{n_studies * n_trials} trials told ({int(trials.pruned.sum())} pruned, {int(trials.failed.sum())} "
            f"failed); tuned configurations retrained: {tuned.run.nunique()} of {n_studies} "
            f"({len(tuned)} of {n_studies * n_seeds} runs).")


def complete(dataset: str, profile: str = "quick", results_dir=None, df: pd.DataFrame | None = None) -> bool:
    """Whether ``dataset``'s tuned table is complete: every variant's study retrained on every
    tuned seed (the README leads with it only then). ``df``: the store's results, if already read."""
    from ..store.presets import tuned_variants, tuning_budget
    df = load_results(results_dir, profile) if df is None else df
    tuned = of_kind(df[df.dataset == dataset], "tuned") if len(df) else df
    tuned = tuned[tuned.run != TUNED_TEACHER] if len(tuned) else tuned
    n_seeds = tuning_budget(dataset, profile)[1]
    want = set(tuned_variants(dataset))
    return bool(want) and len(tuned) > 0 and set(tuned.role) == want and \
        all((tuned.role == v).sum() >= n_seeds for v in want)


def tuned_comparisons(tuned: pd.DataFrame) -> pd.DataFrame:
    """``findings.versus_baselines`` of tuned runs, each against the tuned baseline of its network,
    with the variant each retrains (``role``)."""
    vs = findings.versus_baselines(tuned, sorted(tuned.run.unique()), against=_against_tuned)
    return vs.assign(role=vs.run.map(dict(zip(tuned.run, tuned.role)))) if not vs.empty else vs


def leads(df: pd.DataFrame, profile: str = "quick", results_dir=None, datasets=None) -> dict[str, dict]:
    """Per main dataset (``summary.MAIN``, or ``datasets``) whose tuned table is ``complete``: its
    comparisons named by variant, trial budget and seeds (what the README and 31_report lead with)."""
    from ..store.presets import tuning_budget
    from .summary import MAIN, by_variant
    out = {}
    for d in datasets or MAIN:
        if d in set(df.dataset) and complete(d, profile, results_dir, df):
            n_trials, n_seeds = tuning_budget(d, profile)
            t = of_kind(df[df.dataset == d], "tuned")
            out[d] = {"vs": by_variant(tuned_comparisons(t), df, d), "trials": n_trials, "seeds": n_seeds}
    return out


def readme_block(datasets, profile: str, root) -> str:
    """The README's tuned comparison: per dataset the table once tuned runs exist, else where the
    tuning stands (``status_line``)."""
    parts, tables = ["### Every method tuned with the same budget (notebooks/14_tuning)"], 0
    for ds in datasets:
        comparison = tuned_vs_published(ds, profile, root)
        parts.append(status_line(ds, profile, root))
        if not comparison.empty:
            tables += 1
            parts.append(comparison.to_markdown())
            parts.append(interpretation(trials_summary(ds, profile, root), comparison, ds))
    if not tables:
        parts.append("No tuned configuration has been retrained on its seeds yet: every table below is the "
                     "as-published study (literature hyper-parameters, 3 seeds).")
    return "\n\n".join(parts)
