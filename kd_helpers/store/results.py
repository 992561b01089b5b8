"""Results store: one directory per run, ``<root>/<dataset>/<run>/seed_<k>/``.

Files (all written atomically): ``config.json`` (resolved config), ``env.json`` (packages,
git commit, device), ``history.csv`` (per epoch), ``predictions.npz`` (test labels + logits,
extra classifiers), ``model.pt`` (weights + architecture name), ``metrics.json``, and last
``manifest.json`` (size + sha256 of every other file): its presence means "finished", and
reading a run checks the files against it, so a damaged file is found and named.
"""
from __future__ import annotations

import io
import json
import os
import warnings
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.util import REPO_ROOT, _atomic, atomic_write_json, atomic_write_text, precision_label, sha256
from .presets import study_parts


def results_root(root: str | os.PathLike | None = None, profile: str | None = None) -> Path:
    """``root``, else ``$KD_RESULTS_DIR``, else ``<repo>/results/<profile>``."""
    if root:
        return Path(root)
    if os.environ.get("KD_RESULTS_DIR"):
        return Path(os.environ["KD_RESULTS_DIR"])
    return REPO_ROOT / "results" / (profile or "quick")


def dataset_dir(root, dataset: str) -> Path:
    """Where ``dataset``'s runs live in the store. A name with a path gets a digest of the exact
    name too (``imagefolder:/x/a_b`` -> ``imagefolder__x_a_b-<crc32>``): the readable part alone
    would let ``/x/a_b`` and ``/x/a/b`` share one directory."""
    flat = dataset.replace(":", "_").replace("/", "_")
    if "/" in dataset or "\\" in dataset:
        flat += f"-{zlib.crc32(dataset.encode()):08x}"
    return Path(root) / flat


def run_dir(root, dataset: str, run: str, seed: int) -> Path:
    return dataset_dir(root, dataset) / run / f"seed_{seed}"


MANIFEST = "manifest.json"
RUN_FILES = ("config.json", "env.json", "history.csv", "predictions.npz", "model.pt", "metrics.json", "train.log")
# in manifests since a later version: a run from before has none listed, which is no damage
RECORDED_LATER = ("train.log",)


class DamagedRun(RuntimeError):
    """A finished run whose files do not match its manifest (or cannot be read)."""

    def __init__(self, path, problems: list[str]):
        self.path, self.problems = Path(path), problems
        super().__init__(f"Run {path} is damaged: {'; '.join(problems)}.")


def is_finished(path) -> bool:
    return (Path(path) / MANIFEST).exists()


def write_manifest(path, **extra) -> None:
    """Size and sha256 of every run file present, plus ``extra`` entries; written last."""
    path = Path(path)
    atomic_write_json(path / MANIFEST, {**{f: {"bytes": (path / f).stat().st_size, "sha256": sha256(path / f)}
                                           for f in RUN_FILES if (path / f).exists()}, **extra})


def write_npz(path, arrays: dict[str, np.ndarray]) -> None:
    """A compressed ``.npz``, written atomically."""
    def write(f):
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        f.write(buf.getvalue())
    _atomic(path, write)


def check_run(path, files=RUN_FILES) -> list[str]:
    """What is wrong with a finished run's ``files`` (empty if nothing): missing, resized or altered."""
    path = Path(path)
    try:
        manifest = read_json(path / MANIFEST)
    except (OSError, ValueError) as e:
        return [f"{MANIFEST} unreadable ({type(e).__name__})"]
    problems = []
    for f in files:
        want = manifest.get(f)
        if want is None:
            # a published (compact) student run keeps no weights, a published tuning trial no
            # predictions (its manifest says so), by design
            if f != "model.pt" and f not in manifest.get("omitted", ()) and f not in RECORDED_LATER:
                problems.append(f"{f} not in the manifest")
        elif not (path / f).exists():
            problems.append(f"{f} missing")
        elif (path / f).stat().st_size != want["bytes"]:
            problems.append(f"{f} has {(path / f).stat().st_size} bytes, the manifest says {want['bytes']}")
        elif sha256(path / f) != want["sha256"]:
            problems.append(f"{f} does not match its sha256 in the manifest")
    return problems


def verify_run(path, files=RUN_FILES) -> None:
    problems = check_run(path, files)
    if problems:
        raise DamagedRun(path, problems)


def save_run(path, *, config: dict, env: dict, history: list[dict], labels: np.ndarray,
             logits: np.ndarray, extra_logits: dict[str, np.ndarray], metrics: dict) -> None:
    path = Path(path)
    atomic_write_json(path / "config.json", config)
    atomic_write_json(path / "env.json", env)
    atomic_write_text(path / "history.csv", pd.DataFrame(history).to_csv(index=False))
    write_npz(path / "predictions.npz", {"labels": labels, "logits": logits,
                                         **{f"extra_{k}": v for k, v in extra_logits.items()}})
    atomic_write_json(path / "metrics.json", metrics)
    write_manifest(path)  # last: marks the run as finished


# the files a table of results reads; model.pt is checked where a model is loaded
TABLE_FILES = ("config.json", "env.json", "history.csv", "predictions.npz", "metrics.json")


def read_json(path) -> dict:
    return json.loads(Path(path).read_text())


def load_run(path, verify: bool = True) -> dict:
    path = Path(path)
    if verify:
        verify_run(path, TABLE_FILES)
    return {"config": read_json(path / "config.json"), "metrics": read_json(path / "metrics.json"),
            "env": read_json(path / "env.json"), "history": pd.read_csv(path / "history.csv"), "dir": path}


def load_predictions(path) -> dict[str, np.ndarray]:
    with np.load(Path(path) / "predictions.npz") as z:
        return {k: z[k] for k in z.files}


def finished_runs(root) -> list[Path]:
    root = Path(root)
    return sorted(p.parent for p in root.glob(f"*/*/seed_*/{MANIFEST}")) if root.exists() else []


def lost_manifest(path) -> str | None:
    """Why a run directory without a manifest is damaged (it holds a finished run's files and no
    epoch checkpoint to resume from), or None (finished, in progress, or empty)."""
    path = Path(path)
    if is_finished(path) or (path / "checkpoint.pt").exists():
        return None
    files = [f for f in ("model.pt", "config.json", "metrics.json", "predictions.npz") if (path / f).exists()]
    return f"{', '.join(files)} but no {MANIFEST} (and no checkpoint to resume from)" if files else None


def _runs(root, damaged: list | None = None):
    """Finished runs whose table files are intact; damaged ones (also a run's files without a
    manifest) are reported, not read."""
    ok = []
    for d in sorted(Path(root).glob("*/*/seed_*")) if Path(root).exists() else []:
        why = lost_manifest(d)
        if why:
            warnings.warn(f"Skipping damaged run {d}: {why}. Delete it (or rerun its notebook: a damaged student "
                          f"run is retrained) to include it again.", stacklevel=3)
            if damaged is not None:
                damaged.append(str(d))
    for d in finished_runs(root):
        problems = check_run(d, TABLE_FILES)
        if problems:
            warnings.warn(f"Skipping damaged run {d}: {'; '.join(problems)}. Delete it (or rerun its notebook: "
                          f"a damaged student run is retrained) to include it again.", stacklevel=3)
            if damaged is not None:
                damaged.append(str(d))
        else:
            ok.append(d)
    return ok


def run_kind(config: dict) -> str:
    """What a run is for (``RunSpec.kind``): study | ablation | prune | trial | tuned, as its
    config records it (a tuning trial from before kinds were recorded: its ``trial``; any other
    run without a kind is a study run)."""
    if config.get("kind"):
        return config["kind"]
    if config.get("trial"):
        return "trial"
    if config["run"].startswith(LEGACY_PREFIXES):
        raise LegacyStore(f"Run '{config['run']}' ({config['dataset']}, seed {config['seed']}) was stored before runs "
                          f"recorded their kind: update the store once with `python -m kd_helpers.migrate "
                          f"--results-dir <its results directory>` (it renames and annotates, it trains nothing).")
    return "study"


# names that only an ablation, pruned or tuned run carried before kinds were recorded (kd_helpers.migrate)
LEGACY_PREFIXES = ("ablation_", "prune_", "tuned_")


class LegacyStore(RuntimeError):
    """A store written before runs recorded their kind and role (``python -m kd_helpers.migrate``)."""


KINDS = ("study", "ablation", "prune", "trial", "tuned")


def _kinds(df: pd.DataFrame) -> pd.Series:
    if "kind" not in df:
        raise ValueError("This table has no 'kind' column: pass rows of load_results (they say what each run is).")
    return df["kind"]


def of_kind(df: pd.DataFrame, *kinds: str) -> pd.DataFrame:
    """The rows of ``df`` whose runs are of one of ``kinds`` (``KINDS``)."""
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"Unknown run kind(s) {sorted(unknown)}; kinds: {', '.join(KINDS)}")
    return df[_kinds(df).isin(kinds)]


def not_of_kind(df: pd.DataFrame, *kinds: str) -> pd.DataFrame:
    """The rows of ``df`` whose runs are of none of ``kinds``."""
    return df[~df.index.isin(of_kind(df, *kinds).index)]


def load_results(root=None, profile: str | None = None, *, trials: bool = False) -> pd.DataFrame:
    """One tidy row per finished run: dataset, run, method, model, seed, then every metric.
    Tuning trials (no test accuracy) only with ``trials=True``.

    Damaged runs are skipped with a warning and listed in ``df.attrs["damaged"]``."""
    rows, damaged = [], []
    for d in _runs(results_root(root, profile), damaged):
        cfg, m = read_json(d / "config.json"), read_json(d / "metrics.json")
        kind = run_kind(cfg)
        if kind == "trial" and not trials:
            continue   # a tuning trial: validation only, read through kd_helpers.tuning
        env = read_json(d / "env.json") if (d / "env.json").exists() else {}
        data, pair = study_parts(cfg["dataset"])
        rows.append({"dataset": cfg["dataset"], "data": data, "pair": pair, "run": cfg["run"], "method": cfg["method"],
                     "model": cfg["model"], "seed": cfg["seed"], "kind": kind,
                     # what it stands in for and, for an ablation, what it changes (RunSpec.role, .protocol)
                     "role": cfg.get("role"), "protocol": cfg.get("protocol"),
                     "val_size": cfg.get("data", {}).get("val_size"),
                     # runs from before versioned losses carry none: they were trained under version 1
                     "loss_version": cfg.get("loss_version", 1),
                     # the fingerprint of the code that trained it (util.code_fingerprint); None before it was recorded
                     "training_code": env.get("training_code"), "teacher_run": cfg.get("teacher"),
                     "teacher_seed": cfg.get("teacher_seed") if cfg.get("teacher") else None,
                     **m, "precision": precision_label(m.get("precision")), "dir": str(d)})
    df = pd.DataFrame(rows)
    df.attrs["damaged"] = damaged
    return df


def load_histories(root=None, profile: str | None = None, *, trials: bool = False) -> pd.DataFrame:
    """Every run's per-epoch history, stacked, with dataset/run/seed/kind columns (tuning trials
    only with ``trials=True``, as in ``load_results``)."""
    frames = []
    for d in _runs(results_root(root, profile)):
        cfg = read_json(d / "config.json")
        kind = run_kind(cfg)
        if kind == "trial" and not trials:
            continue
        h = pd.read_csv(d / "history.csv")
        if "precision" in h:
            h["precision"] = h["precision"].map(precision_label)
        frames.append(h.assign(dataset=cfg["dataset"], run=cfg["run"], method=cfg["method"], seed=cfg["seed"], kind=kind))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def test_logits(df: pd.DataFrame, dataset: str, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Test labels and per-run logits of one seed of every run of a dataset (same test examples).

    A teacher serves every student seed: a teacher run without this seed is taken at the seed its
    students name. Runs evaluated on different test examples are an error that names them."""
    d = df[df.dataset == dataset]
    rows = d[d.seed == seed]
    students = rows.dropna(subset=["teacher_run"]) if "teacher_run" in rows else rows.iloc[:0]
    for (t_run, t_seed), _ in students.groupby(["teacher_run", "teacher_seed"]):
        if t_run not in set(rows.run):
            rows = pd.concat([rows, d[(d.run == t_run) & (d.seed == int(t_seed))]])
    y, first, logits = None, None, {}
    for r in rows.itertuples():
        p = load_predictions(r.dir)
        if y is None:
            y, first = p["labels"], r.run
        elif len(p["labels"]) != len(y) or not np.array_equal(p["labels"], y):
            raise ValueError(f"Runs '{first}' and '{r.run}' of {dataset} (seed {seed}) were evaluated on different "
                             f"test examples ({len(y)} vs {len(p['labels'])} labels): they come from different "
                             f"data configs. Compare runs of one profile and data config only.")
        logits[r.run] = p["logits"]
    return y, logits


def best_run(df: pd.DataFrame, dataset: str, exclude=("teacher", "baseline"), model: str | None = None,
             metric: str = "val_acc") -> str:
    """The run with the highest mean *validation* accuracy (model selection never sees the test set)."""
    # the as-published study's students (distill-then-prune's design; a tuned run would change its plan)
    d = of_kind(df, "study")
    d = d[(d.dataset == dataset) & ~d.run.isin(exclude) & (d.method != "ce")]
    if model:
        d = d[d.model == model]
    if d.empty:
        raise ValueError(f"No candidate runs for {dataset} (excluding {exclude}); run the method notebooks first.")
    return d.groupby("run")[metric].mean().idxmax()


def training_throughput(df: pd.DataFrame) -> pd.DataFrame:
    """Training images per second of each network, from its no-KD runs (pruning and ablation runs
    left out): training examples x epochs over the epochs' time without their evaluation passes,
    mean over seeds, with the threads and precision the runs had (from their own records)."""
    d = not_of_kind(df, "prune", "ablation")
    d = d[d.method == "ce"]
    rows = []
    for r in d.itertuples():
        h = pd.read_csv(Path(r.dir) / "history.csv")
        train_s = float((h.time_s - h.eval_s).sum()) if "eval_s" in h else float(h.time_s.sum())
        rows.append({"dataset": r.dataset, "model": r.model, "params": r.params,
                     "images_per_s": r.n_train * len(h) / train_s,
                     "threads": read_json(Path(r.dir) / "env.json").get("threads"), "precision": r.precision})
    if not rows:
        return pd.DataFrame(columns=["dataset", "model", "params", "images_per_s", "threads", "precision"])
    return (pd.DataFrame(rows).groupby(["dataset", "model"], as_index=False)
            .agg(params=("params", "first"), images_per_s=("images_per_s", "mean"), threads=("threads", "max"),
                 precision=("precision", "first")).sort_values(["dataset", "params"], ascending=[True, False]))
