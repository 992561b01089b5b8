"""Result tables in the reference study's format, and the generated README section.

``python -m kd_helpers.report --update-readme [--profile quick]`` rewrites the part of
README.md between the ``<!-- results:start -->`` / ``<!-- results:end -->`` markers from the
results store; ``--timings --update-readme --profile paper`` rewrites the ``timings`` block from
the runner's ``reports/<profile>/timings.json``. Nothing in either is typed by hand.
"""
from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

import pandas as pd

from .analysis import summary, tuning_report
from .analysis.tables import CI_LEGEND, results_table  # noqa: F401 - the tables' home is tables.py
from .analysis.ablation_report import from_results, summary_line
from .experiment import spec_for
from .analysis.findings import (REFERENCE, VERDICT_LEGEND, accuracy_summary, per_network, study_compute, study_findings,
                       verdict_cell, versus_baselines)
from .core.losses import loss_class
from .core.models import network_config
from .plan import study_jobs
from .store.presets import PROOF_EPOCHS, family, preset, study_parts
from .store.results import is_finished, load_results, not_of_kind, read_json, results_root
from .analysis.stats import mean_ci, relative_to_teacher
from .plan import STEPS
from .study import load_timings, run_study
from .core.util import REPO_ROOT, precision_label

START, END = "<!-- results:start -->", "<!-- results:end -->"
SSTART, SEND = "<!-- summary:start -->", "<!-- summary:end -->"
# the paper study's full generated tables live here; the README carries the one-screen summary
RESULTS_DOC = REPO_ROOT / "docs" / "results.md"
TSTART, TEND = "<!-- timings:start -->", "<!-- timings:end -->"


def superseded(df: pd.DataFrame, profile: str) -> pd.DataFrame:
    """The runs of ``df`` trained under an earlier definition of their loss or network, or with
    the study's earlier hyper-parameters for that run name: one row per dataset, run and kind of
    change (loss, network, hyper-parameters). They are shown as published until retrained
    (``make study`` refuses to reuse them)."""
    rows = []
    for (ds, run), g in df.groupby(["dataset", "run"], sort=True):
        cfg = read_json(Path(g.dir.iloc[0]) / "config.json")
        if g["kind"].iloc[0] in ("prune", "ablation") or cfg.get("start"):
            continue
        try:
            now = spec_for(run, ds, profile)
        except ValueError:
            continue
        row = {"dataset": ds, "run": run, "model": cfg["model"]}
        if cfg.get("loss_version", 1) != loss_class(cfg["method"]).version:
            rows.append({**row, "kind": "loss", "changed": f"v{cfg.get('loss_version', 1)}"})
        if cfg.get("network_version", 1) != network_config(cfg["model"])["version"]:
            rows.append({**row, "kind": "network", "changed": f"v{cfg.get('network_version', 1)}"})
        changed = {k: (v, now.loss.get(k)) for k, v in cfg["loss"].items() if now.loss.get(k, v) != v}
        if changed:
            rows.append({**row, "kind": "hyper-parameters",
                         "changed": ", ".join(f"{k} {a:g} -> {b:g}" if isinstance(a, float) else f"{k} {a} -> {b}"
                                              for k, (a, b) in sorted(changed.items()))})
    return pd.DataFrame(rows, columns=["dataset", "run", "model", "kind", "changed"])


def superseded_line(df: pd.DataFrame, profile: str) -> str:
    old = superseded(df, profile)
    if old.empty:
        return ""
    parts = []
    for ds, g in old.groupby("dataset", sort=True):
        loss = g[g.kind == "loss"]
        hp = g[g.kind == "hyper-parameters"]
        net = g[g.kind == "network"]
        what = []
        if len(loss):
            what.append("an earlier loss definition for " + ", ".join(loss.run))
        if len(hp):
            what.append("the study's earlier hyper-parameters for " + ", ".join(f"{r.run} ({r.changed})" for r in hp.itertuples()))
        if len(net):
            what.append("`nn.Dropout` (before the faster CPU dropout) in every run of " + ", ".join(sorted(net.model.unique())))
        parts.append(f"{ds}: " + "; ".join(what))
    return ("**Trained under an earlier definition** (shown as published until retrained; a new study run "
            "retrains them; kd_helpers/core/losses and benchmarks/README.md say what changed): " + ". ".join(parts) + ".")


def markdown_tables(df: pd.DataFrame, title_note: str = "", include_pruned: bool = False) -> str:
    """One table per dataset; pruned models (notebook 20) are left out unless asked for."""
    if not include_pruned:
        df = not_of_kind(df, "prune")
    parts = []
    for ds in sorted(df.dataset.unique()):
        t = results_table(df, ds)
        parts.append(f"**{ds}** {title_note}\n\n{t.to_markdown(index=False)}\n")
    return "\n".join(parts)


def provenance(df: pd.DataFrame) -> str:
    """Which training precision(s) and commit(s) produced these runs (from each run's records)."""
    prec = df["precision"].map(precision_label) if "precision" in df else pd.Series(["fp32"] * len(df))
    def commit(d):   # a run trained outside a git checkout recorded none; -dirty: uncommitted changes
        c = read_json(Path(d) / "env.json").get("git_commit")
        return f"{c[:7]}{'-dirty' if c.endswith('-dirty') else ''}" if c else "not recorded"
    commits = pd.Series([commit(d) for d in df.dir]).value_counts().sort_index()
    codes = (df.training_code if "training_code" in df else pd.Series([None] * len(df))).fillna("not recorded")
    return (f"training precision: {', '.join(f'{p} ({n} runs)' for p, n in prec.value_counts().items())}; "
            f"commit{'s' if len(commits) > 1 else ''}: {', '.join(f'{c} ({n})' for c, n in commits.items())}; "
            f"training-code fingerprint (`util.code_fingerprint`): "
            f"{', '.join(f'{c} ({n})' for c, n in codes.value_counts().sort_index().items())}")


def compare_stores(a: pd.DataFrame, b: pd.DataFrame, label_a: str, label_b: str) -> pd.DataFrame:
    """Test accuracy and training time of the same runs from two stores (e.g. fp32 vs bf16)."""
    keys = ["dataset", "run", "seed"]
    m = a[keys + ["test_acc", "train_s"]].merge(b[keys + ["test_acc", "train_s"]], on=keys, suffixes=("_a", "_b"))
    return pd.DataFrame({
        "Dataset": m.dataset, "Model": m.run, "Seed": m.seed,
        f"Accuracy {label_a}": (100 * m.test_acc_a).round(2), f"Accuracy {label_b}": (100 * m.test_acc_b).round(2),
        "Δ (points)": (100 * (m.test_acc_b - m.test_acc_a)).round(2),
        f"Train time {label_a} (s)": m.train_s_a.round(1), f"Train time {label_b} (s)": m.train_s_b.round(1),
        "Speed-up": (m.train_s_a / m.train_s_b).round(2)}).sort_values(["Dataset", "Model", "Seed"])


def readme_root(profile: str, results_dir=None) -> Path:
    """Where the README's results come from: the published (committed) store for ``paper``, so
    a fresh clone regenerates the same text; the results store otherwise."""
    published = REPO_ROOT / "reports" / profile / "store"
    return Path(results_dir) if results_dir else published if profile == "paper" else results_root(None, profile)


def readme_results(df: pd.DataFrame, profile: str, root: Path, vs: dict[str, pd.DataFrame] | None = None) -> str:
    """Per dataset: the generated findings, then the table with each run's verdict against its
    baseline and the reference study's value; pruning and ablation runs are left out of the tables
    (the findings count their cost and judge KD after pruning)."""
    every, df = df, df[df.kind == "study"]
    parts = [f"_Generated by `python -m kd_helpers.report --update-readme --profile {profile}` from "
             f"`{_rel(root)}`. Accuracy: mean ± std over the seeds in column Seeds (test set, %, each run's "
             f"best-validation epoch); Latency: one network's mean over all its runs (CPU, batch 1, timed "
             f"after each run); {CI_LEGEND}; {VERDICT_LEGEND}; {provenance(df)}._"]
    parts.append(study_compute(every))
    if damaged_line(every):
        parts.insert(0, damaged_line(every))
    main = [d for d in ("mnist", "cifar10") if d in set(df.dataset)]
    if profile == "paper" and main:
        parts.append(tuning_report.readme_block(main, profile, root))
    old = superseded_line(df, profile)
    if old:
        parts.append(old)
    datasets = sorted(df.dataset.unique())
    pairs = [d for d in datasets if study_parts(d)[1]]   # each a study of its own, after the main study's
    for ds in [d for d in datasets if d not in pairs] + ([None] if pairs else []) + pairs:
        if ds is None:
            parts.append(pairs_intro(pairs[0]))
            continue
        g = df[df.dataset == ds]
        vs_ds = (vs or {}).get(ds)
        if vs_ds is None:
            vs_ds = versus_baselines(g, [r for r in g.run.unique() if r != "teacher"])
        parts.append(study_findings(every[every.dataset == ds], vs={ds: vs_ds}) + ablation_line(every, ds))
        parts.append(results_table(g, ds, vs_ds).to_markdown(index=False))
    return "\n\n".join(parts) + "\n"


def ablation_line(results: pd.DataFrame, dataset: str) -> str:
    """The protocol ablation's README line (after the findings' bullets), from finished runs."""
    line = summary_line(from_results(results, dataset), dataset)
    return "\n" + line if line else ""


def pairs_intro(study: str) -> str:
    """What the pair studies are, with the protocol they ran (from the preset, never typed)."""
    t = preset(study, "paper").train
    data = study_parts(study)[0]
    return (f"### Residual teacher-student pairs\nEach `<dataset>@<teacher>-<student>` below is a study of its own "
            f"(the other reference studies' networks, `kd_helpers/core/zoo.py`). On {data} these are this machine's proof "
            f"runs: RepDistiller's optimiser (SGD momentum {t.momentum}, lr {t.lr}, weight decay {t.weight_decay}, "
            f"batch {t.batch_size}) for {t.epochs} epochs, {t.schedule} schedule, augmentation {'on' if t.augment else 'off'}, "
            f"instead of 240 epochs with crop + flip, so their accuracies are far below the published CIFAR numbers "
            f"and say how the methods compare after a short schedule only.")


class DamagedStore(SystemExit):
    """Outputs would be generated from a store with damaged runs (they would silently drop out)."""


def published(profile: str, results_dir=None, allow_damaged: bool = False) -> tuple[Path, pd.DataFrame]:
    """The store the README and the summary notebooks read, and its runs. An empty store is an
    error, and so is one with damaged runs: published outputs are never generated without them
    unless ``allow_damaged`` (then the generated text says which were left out)."""
    import warnings
    root = readme_root(profile, results_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")    # damaged runs are named below, once
        df = load_results(root)
    damaged = df.attrs.get("damaged", [])
    if damaged and not allow_damaged:
        shown = ", ".join(str(_rel(Path(d))) for d in damaged)
        raise DamagedStore(f"{len(damaged)} damaged run(s) in {_rel(root)}: {shown}. Nothing was generated: restore "
                           f"them (git checkout -- {_rel(root)} for the published store; a damaged run in a results "
                           f"store is retrained by rerunning its notebook), or pass --allow-damaged to generate "
                           f"without them (the text then says so).")
    if df.empty:
        raise SystemExit(f"No finished runs under {root}: run `make study PROFILE={profile}` first.")
    return root, df


def damaged_line(df: pd.DataFrame) -> str:
    """What an output generated with --allow-damaged left out (empty for an intact store)."""
    damaged = df.attrs.get("damaged", [])
    return (f"**Generated without {len(damaged)} damaged run(s)**, left out of every table and test: "
            f"{', '.join(f'`{_rel(Path(d))}`' for d in damaged)}." if damaged else "")


def summary_block(df: pd.DataFrame, root: Path, profile: str = "paper", vs: dict[str, pd.DataFrame] | None = None) -> str:
    """The README's one screen: the abstract, the main figure and one compact table per main
    dataset, each method's verdict against its own baseline (``kd_helpers.analysis.summary``).
    A dataset whose tuned table is complete leads with it; its as-published table follows."""
    main = [d for d in summary.MAIN if d in set(df.dataset)]
    tuned = tuning_report.leads(df, profile, root)
    status = [tuning_report.status_line(d, profile, root) for d in main if d not in tuned]
    parts = [f"_Generated by `python -m kd_helpers.report --update-readme --profile {profile}` from `{_rel(root)}`; "
             f"every table, finding, cost and timing in full: [docs/results.md](docs/results.md)._",
             f"**Abstract.** {summary.abstract(df, status, vs, tuned)}{superseded_note(df, profile)}",
             "![Each method's difference to its no-KD baseline with its 95% CI, per dataset](figures/forest.png)"]
    if damaged_line(df):
        parts.insert(1, damaged_line(df))
    how = ("mean and 95% CI over seeds and test images; difference to the no-KD run of the same network "
           "with its 95% CI; verdict by the seed-and-image test, Holm")
    for d in main:
        name = "CIFAR-10" if d == "cifar10" else "MNIST"
        if d in tuned:
            t = tuned[d]
            parts.append(f"**{name}, every method tuned** ({t['trials']} trials per variant on validation, "
                         f"{t['seeds']} seeds; test accuracy of the best-validation epoch, {how}; the tuned "
                         f"baseline is the reference; as published: the same variant at its literature values)"
                         f"\n\n" + summary.tuned_table(df, d, t["vs"]).to_markdown(index=False, disable_numparse=True))
        parts.append(f"**{name}{', as published' if d in tuned else ''}** (test accuracy of the best-validation "
                     f"epoch, {how}; reference: the reference study's "
                     f"number)\n\n" + summary.compact_table(df, d, (vs or {}).get(d)).to_markdown(index=False))
    return "\n\n".join(parts)


def superseded_note(df: pd.DataFrame, profile: str) -> str:
    """One sentence on the as-published rows trained under an earlier definition (if any)."""
    old = superseded(df[df.kind == "study"], profile)
    if old.empty:
        return ""
    n = len(old[["dataset", "run"]].drop_duplicates())
    return (f" {n} of the as-published table rows were trained under an earlier loss or network definition "
            f"(listed in docs/results.md); the tuned study retrains every method under the current ones.")


def forest_figure(df: pd.DataFrame, root: Path, profile: str = "paper", vs: dict[str, pd.DataFrame] | None = None) -> None:
    """figures/forest.png: the main figure (as published; the tuned rows beside them once they exist)."""
    from .analysis.plots import save
    tuned = {}
    for d in summary.MAIN:
        t = df[(df.dataset == d) & (df.kind == "tuned")]
        if len(t):
            tuned[d] = tuning_report.tuned_comparisons(t)
    save(summary.forest(df, tuned, vs=vs), "forest", profile)


def update_readme(profile: str = "quick", results_dir=None, readme: Path = REPO_ROOT / "README.md",
                  allow_damaged: bool = False, doc: Path = RESULTS_DOC) -> str:
    """``paper``: the README's summary (and figures/forest.png), and docs/results.md's full results
    and reference experiments' blocks, all from the published store. Another profile: ``readme``'s
    results block from its results store."""
    root, df = published(profile, results_dir, allow_damaged)
    if profile != "paper":
        return replace_block(readme, START, END, readme_results(df, profile, root))
    replace_block(doc, XSTART, XEND, experiments_block(df, root))
    vs = summary.all_comparisons(df)   # the verdicts every block and the figure show, computed once
    body = replace_block(doc, START, END, readme_results(df, profile, root, vs))
    forest_figure(df, root, profile, vs)
    replace_block(readme, SSTART, SEND, summary_block(df, root, profile, vs))
    return body


SUMMARY_NOTEBOOKS = ("30_statistics", "31_report")


def rerun_summaries(profile: str = "paper", results_dir=None, log=print) -> dict:
    """Re-execute 30_statistics and 31_report on every study of the published store (the results
    store for other profiles), into reports/<profile>/. They only read runs: nothing trains."""
    root, df = published(profile, results_dir)
    seeds = sorted(int(s) for s in df.seed.unique())
    return run_study(profile, datasets=sorted(df.dataset.unique()), seeds=seeds, results_dir=root,
                     only=list(SUMMARY_NOTEBOOKS), log=log)


def complete_notebooks(dataset: str, profile: str, seeds, root: Path) -> list[str]:
    """The per-dataset notebooks of ``dataset`` whose every run (all ``seeds``) is finished in ``root``."""
    def done(nb):
        return all(is_finished(j.dir(root)) for j in study_jobs([(nb, dataset)], profile, seeds, root))
    return [s.notebook for s in STEPS if s.per_dataset and family(dataset) in s.families and done(s.notebook)]


def rerun_figures(profile: str = "paper", results_dir=None, log=print) -> dict[str, list[str]]:
    """Write ``figures/`` (the profile's figures directory) from the published store: re-execute
    every per-dataset notebook whose runs are all finished. The executed copies go to a scratch
    directory (the published notebooks keep the record of the invocation that trained), and
    ``reuse_only`` makes a notebook that would train fail instead. Returns what ran."""
    root, df = published(profile, results_dir)
    ran = {}
    with tempfile.TemporaryDirectory() as scratch:
        for ds in sorted(df.dataset.unique()):
            seeds = sorted(int(s) for s in df[df.dataset == ds].seed.unique())
            ran[ds] = complete_notebooks(ds, profile, seeds, root)
            log(f"{ds} (seeds {seeds}): {', '.join(ran[ds])}")
            run_study(profile, datasets=[ds], seeds=seeds, results_dir=root, reports_dir=scratch,
                      only=ran[ds], log=log, reuse_only=True)
    return ran


# The other reference studies' experiments (#16), and what it takes to run each one
GPU_LAUNCH = "python -m kd_helpers.study --profile paper --datasets {data} --pairs {pairs}"
EXPERIMENTS = [
    ("CIFAR-100, SRD/DIST tables", "cifar100",
     ["wrn_40_4-wrn_16_4", "wrn_40_2-wrn_40_1", "wrn_40_4-wrn_16_2", "wrn_40_4-mobilenetv2", "resnet18-mobilenetv2"],
     "KD, FitNet, AT, DML, DIST, SRD, SRD+DIST", "no CIFAR-100 on this machine; 240 epochs per run need a GPU"),
    ("CIFAR-100 benchmark pairs (RepDistiller / mdistiller)", "cifar100",
     ["resnet32x4-resnet8x4", "resnet56-resnet20", "wrn_40_2-wrn_16_2", "vgg13-vgg8"],
     "KD, FitNet, AT, DML, DIST, SRD, DKD", "no CIFAR-100 on this machine; 240 epochs per run need a GPU"),
    ("ResNet-50 -> ResNet-18 on an ImageFolder tree", "imagefolder224:<tree>", ["resnet50-resnet18"],
     "AT, BYOT, DML, FitNets", "needs an ImageNet-style tree (train/ + val/) and a GPU; full ImageNet does not fit "
     "in memory as uint8 and is refused with what to do (no streaming loader)"),
    ("ResNet-34 -> compact student, then pruning", "cifar10 / tinyimagenet", ["resnet34-mobilenetv2"],
     "KD, distill-then-prune", "no Tiny-ImageNet here and ResNet-34 needs a GPU; the student is MobileNetV2 "
     "(2.24M with 10 classes, 2.48M with 200), the closest registered network to the study's ~3.5M"),
    (f"Proof on this machine: CIFAR-10, {PROOF_EPOCHS} epochs, one seed", "cifar10", ["wrn_40_2-wrn_16_2", "resnet56-resnet20"],
     "baseline, KD, DKD, DIST", ""),
]


def reference_experiments(df: pd.DataFrame) -> pd.DataFrame:
    """Per reference experiment: reproduced here (finished runs in ``df``), or ready to run but
    not run (why, and the command), from the experiment list above."""
    rows = []
    for what, data, pairs, methods, why_not in EXPERIMENTS:
        studies = [f"{d.strip()}@{p}" for d in data.split("/") for p in pairs]
        done = df[df.dataset.isin(studies)] if not df.empty else df
        if len(done):
            status = (f"reproduced here: {done.run.nunique()} runs x {done.seed.nunique()} seed(s) "
                      f"on {done.dataset.nunique()} of {len(studies)} studies")
        elif why_not:
            status = f"ready to run, not run: {why_not}"
        else:
            status = "ready to run, not run yet"
        launch = GPU_LAUNCH.format(data=data.split(" / ")[0], pairs=" ".join(pairs))
        rows.append({"Experiment": what, "Pairs": ", ".join(p.replace("-", " -> ") for p in pairs),
                     "Methods": methods, "Status": status, "Command": f"`{launch}`"})
    return pd.DataFrame(rows)


XSTART, XEND = "<!-- experiments:start -->", "<!-- experiments:end -->"


def experiments_block(df: pd.DataFrame, root: Path) -> str:
    return (f"_Generated by `python -m kd_helpers.report --experiments --update-readme --profile paper` from "
            f"`{_rel(root)}`._\n\n{reference_experiments(df).to_markdown(index=False)}\n")


def timings_table(timings: dict) -> pd.DataFrame:
    """The runner's measured time per notebook (``timings.json``) in study order, with per
    dataset a subtotal of teacher + methods (the notebooks before pruning) and a total. Rows
    name their machine: times from different machines add up only as a rough guide."""
    order = {s.notebook: i for i, s in enumerate(STEPS)}
    core = {s.notebook for s in STEPS[:order["20_pruning"]]}
    by_ds: dict[str, list] = {}
    for key, t in timings.get("notebooks", {}).items():
        ds, nb = key.split("/") if "/" in key else ("all datasets", key)
        by_ds.setdefault(ds, []).append((order.get(nb, len(order)), nb, t))
    rows = []
    for ds in sorted(by_ds, key=lambda d: (d == "all datasets", d)):
        for _, nb, t in sorted(by_ds[ds], key=lambda r: r[:2]):
            rows.append({"Dataset": ds, "Notebook": nb, "Seeds": " ".join(map(str, t.get("seeds") or [])) or "?",
                         "Minutes": round(t["s"] / 60, 1),
                         "Runs trained": t.get("trained_runs", "?"), "Precision": ", ".join(precision_label(p) for p in t["precision"].split(", "))
                         if t.get("precision") else "?" if "precision" not in t else "-",
                         "Commit": t.get("commit", "?"), "Started": t.get("started", "?"),
                         "Machine": t.get("machine", "?")})
        if ds != "all datasets":
            s_core = sum(t["s"] for _, nb, t in by_ds[ds] if nb in core)
            rows.append({"Dataset": ds, "Notebook": "**teacher + methods**", "Minutes": round(s_core / 60, 1)})
        rows.append({"Dataset": ds, "Notebook": "**total**", "Minutes": round(sum(t["s"] for *_, t in by_ds[ds]) / 60, 1)})
    return pd.DataFrame(rows).astype(object).fillna("")


def notebook_of(df: pd.DataFrame) -> pd.Series:
    """The notebook that trains each run of ``df``: the first in study order whose plan lists it
    (pruning runs: 20_pruning; tuning: 14_tuning)."""
    first: dict[tuple[str, str], str] = {}
    # the protocol ablation (01_teacher) lists some of the study's own runs as its reference
    # points: they belong to their method's notebook, so 01_teacher is asked last
    steps = [s for s in STEPS if s.notebook != "01_teacher"] + [s for s in STEPS if s.notebook == "01_teacher"]
    for ds in df.dataset.unique():
        for step in steps:
            if step.per_dataset and family(ds) in step.families:
                for job in study_jobs([(step.notebook, ds)], "paper", [0], "/nonexistent-store"):
                    first.setdefault((ds, job.run), step.notebook)
    by_kind = {"prune": "20_pruning", "trial": "14_tuning", "tuned": "14_tuning", "ablation": "01_teacher"}
    return pd.Series([by_kind.get(k) or first.get((d, r), "other") for d, r, k in zip(df.dataset, df.run, df.kind)],
                     index=df.index)


def training_costs(df: pd.DataFrame) -> pd.DataFrame:
    """Per study and notebook: the runs it trained and their training time as each run recorded
    it (``train_s``, ``cpu_s``), with precision and machine: what the study costs to train, not
    what re-executing its notebooks takes."""
    env = [read_json(Path(d) / "env.json") if (Path(d) / "env.json").exists() else {} for d in df.dir]
    g = df.assign(notebook=notebook_of(df), machine=[f"{e.get('device_name', '?')}, {e.get('threads', '?')} threads"
                                                     for e in env])
    order = {s.notebook: i for i, s in enumerate(STEPS)}
    rows = []
    for (ds, nb), r in sorted(g.groupby(["dataset", "notebook"]), key=lambda kv: (kv[0][0], order.get(kv[0][1], 99))):
        rows.append({"Study": ds, "Notebook": nb, "Runs": len(r), "Training h": round(r.train_s.sum() / 3600, 2),
                     "CPU h": round(r.cpu_s.sum() / 3600, 2) if "cpu_s" in r else None,
                     "Precision": ", ".join(sorted(set(r.precision.map(precision_label)))),
                     "Machines": "; ".join(sorted(set(r.machine)))})
    for ds, r in g.groupby("dataset"):
        rows.append({"Study": ds, "Notebook": "**total**", "Runs": len(r), "Training h": round(r.train_s.sum() / 3600, 2),
                     "CPU h": round(r.cpu_s.sum() / 3600, 2), "Precision": "", "Machines": ""})
    return pd.DataFrame(rows)


def update_readme_timings(profile: str = "paper", reports_dir=None, readme: Path = RESULTS_DOC,
                          results_dir=None) -> str:
    """docs/results.md's cost table: training time per notebook, summed from the runs' records."""
    root, _ = published(profile, results_dir)
    df = load_results(root, trials=True)   # the tuning trials cost training time too
    body = (f"_Generated by `python -m kd_helpers.report --timings --update-readme --profile {profile}` from "
            f"`{_rel(root)}`: each run's own training time (`train_s`, per-epoch time summed; `cpu_s` over all "
            f"threads), summed per study and the notebook that trains it; re-executing a finished study only "
            f"reads runs and costs minutes, which is not shown here._\n\n"
            f"{training_costs(df).to_markdown(index=False)}")
    return replace_block(readme, TSTART, TEND, body)


def replace_block(readme: Path, start: str, end: str, body: str) -> str:
    """Rewrite the text between two marker comments of ``readme``."""
    text = readme.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{readme} has no {start} ... {end} section to rewrite.")
    block = f"{start}\n{body}\n{end}"
    readme.write_text(re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S))
    return block


def _rel(path: Path) -> Path:
    return path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--results-dir", default=None)
    ap.add_argument("--reports-dir", default=None, help="with --timings: default reports/<profile>")
    ap.add_argument("--update-readme", action="store_true", help="rewrite README.md's results (or timings) section")
    ap.add_argument("--notebooks", action="store_true",
                    help="re-execute 30_statistics and 31_report from the (published) store; trains nothing")
    ap.add_argument("--figures", action="store_true",
                    help="write figures/ by re-executing the complete per-dataset notebooks on the (published) "
                         "store into a scratch dir; trains nothing")
    ap.add_argument("--timings", action="store_true", help="the runner's time per notebook (timings.json)")
    ap.add_argument("--experiments", action="store_true",
                    help="the other reference studies' experiments and their state (README table)")
    ap.add_argument("--compare", nargs=2, metavar=("STORE_A", "STORE_B"),
                    help="accuracy and training time of the same runs in two results dirs (e.g. fp32 vs bf16)")
    ap.add_argument("--allow-damaged", action="store_true",
                    help="generate the README from a store with damaged runs, saying in the text which were left out")
    args = ap.parse_args(argv)
    if args.compare:
        a, b = (load_results(Path(p)) for p in args.compare)
        print(compare_stores(a, b, Path(args.compare[0]).name, Path(args.compare[1]).name)
              .to_markdown(index=False))
    elif args.notebooks:
        rerun_summaries(args.profile, args.results_dir)
    elif args.figures:
        rerun_figures(args.profile, args.results_dir)
    elif args.experiments:
        root = readme_root(args.profile, args.results_dir)
        body = experiments_block(load_results(root), root)
        print(replace_block(REPO_ROOT / "README.md", XSTART, XEND, body) if args.update_readme else body)
    elif args.timings and args.update_readme:
        print(update_readme_timings(args.profile, args.reports_dir))
    elif args.timings:
        path = Path(args.reports_dir or REPO_ROOT / "reports" / args.profile) / "timings.json"
        print(timings_table(load_timings(path)).to_markdown(index=False))
    elif args.update_readme:
        print(update_readme(args.profile, args.results_dir, allow_damaged=args.allow_damaged))
    else:
        print(markdown_tables(load_results(results_root(args.results_dir, args.profile))))



if __name__ == "__main__":
    main()
