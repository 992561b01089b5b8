import matplotlib
import pandas as pd

from kd_helpers.analysis import plots

matplotlib.use("Agg")


def test_pretraining_stage_is_shaded_and_out_of_the_y_range():
    rows = [{"run": "kd", "seed": 0, "epoch": e, "val_acc": 0.97 + 0.002 * e} for e in range(1, 9)]
    rows += [{"run": "fitnets", "seed": 0, "epoch": e, "val_acc": 0.1 if e <= 2 else 0.96 + 0.003 * e,
              "stage": 1 if e <= 2 else 2} for e in range(1, 9)]
    fig = plots.learning_curves(pd.DataFrame(rows))
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    assert lo > 0.9 and hi < 1.01               # the 10% stage-1 epochs do not stretch the axis
    shaded = [p for p in ax.patches if p.get_label().startswith("FitNets stage 1")]
    assert len(shaded) == 1 and shaded[0].get_x() == 0.5   # epochs 1-2 shaded


def test_save_writes_files_and_echoes_no_path(tmp_path):
    fig = plots.learning_curves(pd.DataFrame([{"run": "a", "seed": 0, "epoch": 1, "val_acc": 0.5},
                                              {"run": "a", "seed": 0, "epoch": 2, "val_acc": 0.6}]))
    assert plots.save(fig, "x", path=tmp_path) is None
    assert (tmp_path / "x.png").stat().st_size > 0 and (tmp_path / "x.svg").exists()
    first = {f: (tmp_path / f).read_bytes() for f in ("x.png", "x.svg")}
    plots.save(fig, "x", path=tmp_path)   # the same figure again: the same bytes (no date, fixed ids)
    assert {f: (tmp_path / f).read_bytes() for f in first} == first
    plots.save(fig, "grid", path=tmp_path, vector=False)
    assert (tmp_path / "grid.png").exists() and not (tmp_path / "grid.svg").exists()


def test_only_the_paper_profile_writes_to_the_committed_figures_dir(monkeypatch, tmp_path):
    from kd_helpers.core.util import REPO_ROOT
    monkeypatch.delenv("KD_FIGURES_DIR", raising=False)
    monkeypatch.setattr(plots, "REPO_ROOT", tmp_path)
    assert plots.figures_dir(profile="paper") == tmp_path / "figures"
    assert plots.figures_dir(profile="quick") == tmp_path / "reports" / "quick" / "figures"
    monkeypatch.setenv("KD_FIGURES_DIR", str(tmp_path / "env"))
    assert plots.figures_dir(profile="paper") == tmp_path / "env"
    assert REPO_ROOT != tmp_path


def test_pareto_log_axis_has_readable_ticks():
    df = pd.DataFrame({"run": ["teacher", "a", "b", "c"], "seed": 0, "test_acc": [0.99, 0.97, 0.95, 0.96],
                       "params": [2.4e6, 1.3e6, 8.5e4, 5.1e5]})
    fig = plots.pareto(df, "params")
    fig.canvas.draw()
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert len(labels) >= 3 and "1M" in labels and "100k" in labels   # 1-2-5 steps, SI suffixes


def test_pareto_by_latency_uses_one_latency_per_network_in_percent():
    df = pd.DataFrame({"run": ["teacher", "kd", "dml", "small"], "seed": 0, "test_acc": [0.99, 0.97, 0.96, 0.95],
                       "model": ["big", "student", "student", "tiny"], "params": [2e6, 5e5, 5e5, 1e5],
                       "latency_ms": [2.0, 0.55, 1.07, 0.2]})     # one network timed at 0.55 and 1.07 ms
    fig = plots.pareto(df, "latency_ms")
    xs = {round(float(c.get_offsets()[0][0]), 3) for c in fig.axes[0].collections}
    assert xs == {2.0, 0.81, 0.2}                     # kd and dml share their network's mean
    ys = sorted(float(c.get_offsets()[0][1]) for c in fig.axes[0].collections)
    assert ys == [95.0, 96.0, 97.0, 99.0] and "%" in fig.axes[0].get_ylabel()


def test_accuracy_axes_are_in_percent_like_the_tables():
    hist = pd.DataFrame({"run": ["a"] * 3, "seed": 0, "epoch": [1, 2, 3], "val_acc": [0.90, 0.95, 0.97]})
    ax = plots.learning_curves(hist).axes[0]
    ax.figure.canvas.draw()
    assert ax.get_ylabel() == "validation accuracy (%)" and all(t.get_text().endswith("%") for t in ax.get_yticklabels() if t.get_text())
    summ = pd.DataFrame({"run": ["a", "b"], "mean": [0.9, 0.95], "ci_low": [0.89, 0.94], "ci_high": [0.91, 0.96], "n": 3})
    ax = plots.accuracy_ci(summ).axes[0]
    ax.figure.canvas.draw()
    assert ax.get_xlabel() == "test accuracy (%)" and any(t.get_text().endswith("%") for t in ax.get_xticklabels())
