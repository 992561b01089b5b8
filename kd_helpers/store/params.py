"""Notebook parameters, checked before anything runs.

A notebook's ``parameters`` cell is the list of what it accepts (papermill injects ``-p`` values
after it). ``check_parameters(globals(), "13_dkd")`` reads that cell, refuses a name the cell does
not declare (papermill itself only warns and injects it anyway), and checks every value's type
and range from one table below, with an error naming the parameter and what it accepts.
"""
from __future__ import annotations

import ast
import json
import math
import re
import types

from ..core.data import DATASET_NAMES
from .presets import PAIRS, PROFILES, split_study
from ..core.util import REPO_ROOT

NOTEBOOKS = REPO_ROOT / "notebooks"


class ParameterError(ValueError):
    pass


def _num(lo=-math.inf, hi=math.inf, lo_open=False, integer=False, optional=True):
    """A rule for a number in [lo, hi] (``lo_open``: lo excluded); None means "the study's value"."""
    def check(v):
        if v is None and optional:
            return None
        ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok_type:
            return f"a{'n integer' if integer else ' number'}{' or None' if optional else ''}"
        if not math.isfinite(v) or not (lo < v if lo_open else lo <= v) or v > hi:
            return f"a finite number in {'(' if lo_open else '['}{lo:g}, {hi:g}]"
        return None
    return check


def _seeds(v):
    if isinstance(v, list) and v and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in v):
        return None
    return "a non-empty list of non-negative integers, e.g. [0, 1, 2]"


def _seeds_or_none(v):
    return None if v is None else _seeds(v)


def _path_or_none(v):
    return None if v is None or isinstance(v, str) else "a path (string) or None"


def _dataset(v):
    if isinstance(v, str):
        try:
            data, _pair = split_study(v)
        except ValueError:
            data = None
        if data in DATASET_NAMES or re.fullmatch(r"imagefolder\d*:.+", data or ""):
            return None
    return (f"one of {', '.join(DATASET_NAMES)} or imagefolder[<size>]:<path>, optionally with a teacher-student "
            f"pair: <dataset>@<pair>, pairs {', '.join(PAIRS)}")


def _datasets(v):
    if isinstance(v, list) and v and all(_dataset(d) is None for d in v):
        return None
    return f"a non-empty list of dataset names ({', '.join(DATASET_NAMES)}, imagefolder:<path>, <dataset>@<pair>)"


def _choice(*options):
    return lambda v: None if v in options else f"one of {', '.join(map(repr, options))}"


def _list_of(options):
    return lambda v: (None if isinstance(v, list) and v and all(x in options for x in v)
                      else f"a non-empty list of {', '.join(map(repr, options))}")


def _fractions(v):
    if isinstance(v, list) and v and all(isinstance(x, (int, float)) and 0 < x < 1 for x in v):
        return None
    return "a non-empty list of numbers in (0, 1)"


def _bool(v):
    return None if isinstance(v, bool) else "True or False"


def _str(v):
    return None if isinstance(v, str) and v else "a non-empty string"


# name -> rule (returns None if the value is fine, else what is accepted)
RULES = {
    "dataset": _dataset, "datasets": _datasets, "profile": _choice(*PROFILES), "seeds": _seeds,
    "teacher_seeds": _seeds, "prune_seeds": _seeds_or_none, "tuned_seeds": _seeds_or_none, "data_dir": _path_or_none, "results_dir": _path_or_none,
    "reference": _str, "ablation": _bool,
    # loss hyper-parameters tighter than the rule their signatures give (``loss_rule``):
    # temperatures and scales positive, shares in [0, 1], a bounded number of peer networks
    "T": _num(0, lo_open=True), "tau": _num(0, lo_open=True), "p": _num(0, lo_open=True),
    "alpha": _num(0, 1), "stage1_frac": _num(0, 1), "peers": _num(1, 8, integer=True),
    "beta_one_stage": _num(0), "finetune_epochs": _num(1, integer=True),
    "amounts": _fractions, "kinds": _list_of(("unstructured", "structured")), "finetune": _list_of(("ce", "kd")),
}


def loss_rule(name: str):
    """The rule for a parameter named like a loss hyper-parameter that ``RULES`` does not list,
    from the defaults in the loss signatures (``losses.hparams``): a number of the defaults'
    type (an integer if every default is one), non-negative unless a default is negative, or
    None (the study's value). None when no loss has a numeric default of that name: then the
    parameter needs a rule in ``RULES``."""
    from ..core.losses import LOSSES, hparams
    defaults = [hp[name] for m in LOSSES if name in (hp := hparams(m))]
    kinds = {type(d) for d in defaults}
    if not defaults or not kinds <= {int, float}:
        return None
    return _num(0 if all(d >= 0 for d in defaults) else -math.inf, integer=kinds == {int})


# a parameter left None takes another's value (20_pruning: prune every seed the study trains)
FALLBACK = {"prune_seeds": "seeds"}


def resolved(params: dict) -> dict:
    """``params`` with every ``FALLBACK`` parameter left None set to the value it falls back on."""
    return {**params, **{k: params[v] for k, v in FALLBACK.items() if k in params and params[k] is None}}


def declared(notebook: str) -> dict:
    """Names and default values of a notebook's ``parameters`` cell."""
    nb = json.loads((NOTEBOOKS / f"{notebook}.ipynb").read_text())
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ParameterError(f"notebooks/{notebook}.ipynb needs exactly one cell tagged 'parameters'.")
    tree = ast.parse("".join(cells[0]["source"]))
    return {t.id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign) for t in n.targets}


_IPYTHON = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def check_parameters(namespace: dict, notebook: str) -> dict:
    """Check the parameters a notebook was run with; return them as a dict.

    ``namespace`` is the notebook's ``globals()`` right after the parameters cell (and the cell
    papermill injects after it)."""
    names = declared(notebook)
    given = {k: v for k, v in namespace.items() if not k.startswith("_") and k not in _IPYTHON
             and not callable(v) and not isinstance(v, types.ModuleType)}
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ParameterError(f"Notebook {notebook} has no parameter {', '.join(map(repr, unknown))}. "
                             f"Its parameters: {', '.join(names)}.")
    for name in names:
        rule = RULES.get(name) or loss_rule(name)
        if rule is None:
            raise ParameterError(f"Parameter '{name}' of notebooks/{notebook}.ipynb has no rule in "
                                 f"kd_helpers/store/params.py RULES and is no loss's numeric hyper-parameter: add one.")
        problem = rule(given.get(name))
        if problem:
            raise ParameterError(f"Notebook {notebook}: parameter {name}={given.get(name)!r} is not accepted; "
                                 f"{name} must be {problem}.")
    return resolved({name: given.get(name) for name in names})


__all__ = ["ParameterError", "RULES", "check_parameters", "declared", "loss_rule"]
