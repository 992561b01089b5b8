"""Bring a results store written by earlier code up to the store's current conventions, once:

- every run records what it is (``RunSpec.kind``), and an ablation run its ``role`` and
  ``protocol`` (the row of ``presets.ABLATION_GRID`` it trains), so that the analysis reads them
  instead of parsing names or rebuilding specs;
- pruned runs carry the one naming scheme of ``store.names``
  (``prune_struct_50_kd_srd_dist`` -> ``prune_srd_dist__amount=0.5__finetune=kd__pruning=structured``).

Nothing is trained and no number changes: a run's ``config.json`` gains the fields (its manifest's
checksum follows), a pruned run's directory is renamed and its config's ``run`` with it; logs keep
the name they were written under. Safe to run again (a migrated run is left alone) and on a
published store (``reports/paper/store``) as on a working one.

    python -m kd_helpers.migrate --results-dir results/paper --profile paper
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from .ablation import specs
from .core.util import atomic_write_json, sha256
from .prune_sweep import pruned_name
from .store.results import MANIFEST, read_json, verify_run

# prune_<first 6 letters of the pruning>_<amount in %>_<fine-tuning>_<source>
_LEGACY_PRUNE = re.compile(r"^prune_(struct|unstru)_(\d+)_(ce|kd)_(.+)$")
_PRUNING = {"struct": "structured", "unstru": "unstructured"}


def _runs(root: Path):
    for cfg in sorted(root.glob("*/*/seed_*/config.json")):
        if (cfg.parent / MANIFEST).exists():
            yield cfg.parent


def _rewrite_config(d: Path, changes: dict) -> None:
    """Add ``changes`` to ``d``'s config.json and re-checksum it in the manifest (and in the
    record of the run it was published from, when that was the same file)."""
    verify_run(d)   # a damaged run is named, never re-checksummed
    manifest = read_json(d / MANIFEST)
    old = manifest["config.json"]
    atomic_write_json(d / "config.json", read_json(d / "config.json") | changes)
    new = {"bytes": (d / "config.json").stat().st_size, "sha256": sha256(d / "config.json")}
    manifest["config.json"] = new
    if manifest.get("published_from", {}).get("config.json") == old:
        manifest["published_from"]["config.json"] = new
    atomic_write_json(d / MANIFEST, manifest)


def migrate(root, profile: str = "paper", log=print) -> dict:
    """Migrate the store ``root`` (``<root>/<dataset>/<run>/seed_<k>``); returns counts."""
    root = Path(root)
    done = {"ablation": 0, "prune": 0}
    ablations: dict[tuple[str, int], dict] = {}
    for d in list(_runs(root)):
        cfg = read_json(d / "config.json")
        if cfg.get("kind"):
            continue
        if cfg["run"].startswith("ablation_"):
            key = (cfg["dataset"], cfg["seed"])
            if key not in ablations:
                ablations[key] = {spec.run: spec for _, _, spec, study in specs(*key[:1], profile, key[1]) if not study}
            spec = ablations[key].get(cfg["run"])
            if spec is None:
                raise ValueError(f"{d}: no row of the {profile!r} profile's ablation grid trains run '{cfg['run']}'; "
                                 f"pass the profile the store was trained with (--profile).")
            _rewrite_config(d, {"kind": "ablation", "role": spec.role, "protocol": spec.protocol})
            done["ablation"] += 1
        elif m := _LEGACY_PRUNE.match(cfg["run"]):
            pruning, amount, finetune, source = m.groups()
            if cfg.get("start", {}).get("from") != source:
                raise ValueError(f"{d}: the name says it was pruned from '{source}', its config says "
                                 f"{cfg.get('start', {}).get('from')!r}: not migrated.")
            name = pruned_name(source, _PRUNING[pruning], int(amount) / 100, finetune)
            _rewrite_config(d, {"kind": "prune", "run": name})
            target = d.parent.parent / name / d.name
            if target.exists():
                raise FileExistsError(f"{target} exists already: {d} is not moved over it (remove one of them).")
            target.parent.mkdir(exist_ok=True)
            d.rename(target)
            if not any(d.parent.iterdir()):
                d.parent.rmdir()
            done["prune"] += 1
    log(f"{root}: {done['ablation']} ablation runs annotated, {done['prune']} pruned runs renamed")
    return done


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results-dir", required=True, type=Path, help="the store to migrate")
    ap.add_argument("--profile", default="paper", help="the profile it was trained with (names ablation runs)")
    a = ap.parse_args(argv)
    migrate(a.results_dir, a.profile)


if __name__ == "__main__":
    main()
