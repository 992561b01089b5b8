"""Publish a results store in compact form, so a fresh clone reads and re-checks the study
without retraining (``reports/<profile>/store``, committed).

Every finished run keeps its config, environment, metrics, per-epoch history, training log and
per-sample test logits (compact: see ``compact_logits``); the main studies' teachers that students distil from keep their
weights (students' weights, checkpoints and teacher-output caches stay behind). The residual pairs'
teachers (``<dataset>@<teacher>-<student>``) do not: they are short proof runs, cheaper to retrain
than to carry in a store meant to stay near 60 MB (#15), and a student that needs one says so. Each published run gets its own manifest, so the
compact copy is checked like any run; ``published_from`` in it names the original's sha256s.

    python -m kd_helpers.publish --profile paper [--results-dir results/paper] [--to reports/paper/store]
    python -m kd_helpers.publish --profile paper --restore     # fresh clone: continue on top of them
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from .store.results import (MANIFEST, RUN_FILES, check_run, finished_runs, load_predictions, read_json, results_root,
                      verify_run, write_manifest, write_npz)
from .core.util import REPO_ROOT, atomic_write_bytes
from .store.presets import TUNED_TEACHER, study_parts

KEEP = ("config.json", "env.json", "metrics.json", "history.csv")
OPTIONAL = ("train.log",)
# e**-16 ~ 1.1e-7 is float32's resolution at 1: below it a class's probability is noise
LOGIT_FLOOR = 16.0
FORMAT = "logits-top-relative-floor16-float16"


def compact_logits(z: np.ndarray) -> np.ndarray:
    """Each sample's logits minus its top logit, floored at ``-LOGIT_FLOOR``, in float16.

    Softmax is unchanged by the shift and the argmax exactly kept (near 0 float16 resolves 6e-8);
    the floor only raises probabilities below ~1e-7, which moves a run's NLL and ECE in the 4th
    decimal. It halves a store whose float16 logits barely compress (the tail is incompressible noise),
    which keeps the published study near the 60 MB #15 allows."""
    z = np.asarray(z, dtype=np.float32)
    return np.maximum(z - z.max(-1, keepdims=True), -LOGIT_FLOOR).astype(np.float16)


def publish_run(src: Path, dst: Path, keep_weights: bool) -> None:
    """Copy one finished run in compact form (skipped if already published, intact, from the
    same files). A tuning trial keeps no predictions: its validation logits serve no table."""
    verify_run(src)   # a damaged run is never published
    manifest = read_json(src / MANIFEST)
    if (dst / MANIFEST).exists() and read_json(dst / MANIFEST) == manifest and not check_run(dst):
        return   # ``src`` is a restored copy of this very published run
    if ((dst / MANIFEST).exists() and read_json(dst / MANIFEST).get("published_from") == manifest
            and read_json(dst / MANIFEST).get("format") == FORMAT and (dst / "model.pt").exists() == keep_weights
            and not check_run(dst)):
        return
    trial = bool(read_json(src / "config.json").get("trial"))
    tmp = dst.with_name(f".{dst.name}.publishing")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for f in KEEP + OPTIONAL + (("model.pt",) if keep_weights else ()):
        if (src / f).exists():
            shutil.copyfile(src / f, tmp / f)
    if not trial:
        arrays = load_predictions(src)
        write_npz(tmp / "predictions.npz", {k: compact_logits(v) if k == "logits" or k.startswith("extra_") else v
                                            for k, v in arrays.items()})
    write_manifest(tmp, published_from=manifest, format=FORMAT, **({"omitted": ["predictions.npz"]} if trial else {}))
    _replace(tmp, dst)


def _replace(tmp: Path, dst: Path) -> None:
    """Put a completely written run directory in place (a kill leaves the old one or the new one)."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old")
        if old.exists():
            shutil.rmtree(old)
        dst.rename(old)
        tmp.rename(dst)
        shutil.rmtree(old)
    else:
        tmp.rename(dst)


def copy_journals(src_root: Path, dst_root: Path, replace: bool) -> list[Path]:
    """The tuning studies' Optuna journals (``_tuning/<dataset>/<variant>.journal``); ``replace``:
    overwrite the destination's (publishing), else only add the ones it lacks (restoring)."""
    out = []
    for src in sorted(Path(src_root).glob("_tuning/*/*.journal")):
        dst = Path(dst_root) / src.relative_to(src_root)
        if dst.exists() and (not replace or dst.read_bytes() == src.read_bytes()):
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(dst, src.read_bytes())
        out.append(dst)
    return out


def distilled_from(root: Path) -> set[Path]:
    """The teacher runs some student of a main study distils from (``<dataset>/<teacher>/seed_<k>``),
    and every main study's seed-0 teacher and tuned teacher (the ones students distil from, also
    before any student is trained): the only weights a published store keeps (other teacher seeds and the
    pairs' teachers are only reported)."""
    main = [d for d in finished_runs(root) if study_parts(d.parent.parent.name)[1] is None]
    # students to come: the study's seed-0 teacher, and the tuned study's, which a dataset's KD trials
    # distil from once its baselines' trials (which need no teacher) are told
    out = {d for d in main if d.parent.name in ("teacher", TUNED_TEACHER) and d.name == "seed_0"}
    for d in main:
        cfg = read_json(d / "config.json")
        if cfg.get("teacher"):
            out.add(d.parent.parent / cfg["teacher"] / f"seed_{cfg.get('teacher_seed', 0)}")
    return out


def publish(results_dir, to) -> list[Path]:
    """Publish every finished run of ``results_dir`` into ``to``, and its tuning journals; return
    the published run directories."""
    src_root, dst_root, out = Path(results_dir), Path(to), []
    teachers = distilled_from(src_root)
    for src in finished_runs(src_root):
        dst = dst_root / src.relative_to(src_root)
        publish_run(src, dst, keep_weights=src in teachers)
        out.append(dst)
    copy_journals(src_root, dst_root, replace=True)
    return out


def restore(store, results_dir) -> list[Path]:
    """Copy the published runs that ``results_dir`` lacks into it (each checked first, copied
    whole or not at all), and the tuning journals it lacks, so a fresh clone continues the study
    (new seeds, datasets, pairs or trials) on top of them instead of retraining them."""
    src_root, dst_root, out = Path(store), Path(results_dir), []
    for src in finished_runs(src_root):
        dst = dst_root / src.relative_to(src_root)
        if (dst / MANIFEST).exists() and not check_run(dst):
            continue
        verify_run(src, [f for f in RUN_FILES if (src / f).exists()])   # a damaged published run is named
        tmp = dst.with_name(f".{dst.name}.restoring")
        if tmp.exists():
            shutil.rmtree(tmp)
        shutil.copytree(src, tmp)
        _replace(tmp, dst)   # an unfinished attempt (or a damaged copy) is replaced by the published run
        out.append(dst)
    copy_journals(src_root, dst_root, replace=False)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--results-dir", default=None, help="default: $KD_RESULTS_DIR or results/<profile>")
    ap.add_argument("--to", default=None, help="default: reports/<profile>/store")
    ap.add_argument("--restore", action="store_true",
                    help="the other way: copy the published runs the results dir lacks into it (fresh clone)")
    args = ap.parse_args(argv)
    to = Path(args.to or REPO_ROOT / "reports" / args.profile / "store")
    if args.restore:
        done = restore(to, results_root(args.results_dir, args.profile))
        print(f"restored {len(done)} published runs into {results_root(args.results_dir, args.profile)}")
        return
    done = publish(results_root(args.results_dir, args.profile), to)
    size = sum(f.stat().st_size for f in to.rglob("*") if f.is_file())
    print(f"published {len(done)} runs to {to} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
