"""Run names: one scheme for every kind of run.

A run's directory name is ``<prefix><base>`` followed by ``__<key>=<value>`` for each setting in
which it differs from ``base``, keys sorted:

- ``base`` is the study's run it derives from: a method or named run ('kd', 'fitnets_1stage',
  'baseline', 'teacher'), or for a pruned run the run it was pruned from;
- ``prefix`` says what kind of run it is (``PREFIX``; a table's own run has none).

Examples: ``dkd__beta=4`` (a study run at a non-default beta), ``ablation_teacher__schedule=constant``,
``tune_kd__trial=007``, ``tuned_kd``, ``prune_srd_dist__amount=0.5__finetune=kd__pruning=structured``.

The name is only a directory name: what a run *is* (kind, role, protocol, settings) is read from
its ``config.json``, never parsed back from the name.
"""
from __future__ import annotations

# what each kind of run (``RunSpec.kind``) puts before its base
PREFIX = {"study": "", "ablation": "ablation_", "prune": "prune_", "trial": "tune_", "tuned": "tuned_"}


def fmt(value) -> str:
    """A setting's value in a name: floats in their shortest form (0.5, 4, 1e-05)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def run_name(base: str, settings: dict | None = None, kind: str = "study") -> str:
    """The directory name of a ``kind`` run derived from ``base`` with ``settings`` changed
    (nested dicts, e.g. ``{"loss": {"T": 4.0}}``, are flattened: a key names one setting)."""
    if kind not in PREFIX:
        raise ValueError(f"Unknown run kind {kind!r}; kinds: {', '.join(PREFIX)}")
    flat: dict = {}
    for k, v in (settings or {}).items():
        flat.update(v if isinstance(v, dict) else {k: v})
    if any("__" in str(k) for k in flat):
        raise ValueError(f"A setting's name cannot contain '__' ({sorted(flat)}): it separates the settings "
                         f"in a run name.")
    return "__".join([PREFIX[kind] + base, *(f"{k}={fmt(v)}" for k, v in sorted(flat.items()))])
