import pytest
import torch

from kd_helpers.core.losses import build_loss, describe_pair
from kd_helpers.core.models import create_model
from kd_helpers.core.train import NonFiniteLoss, TrainConfig, fit, lr_factor, make_optimizer
from conftest import tiny_dataset

CFG = TrainConfig(epochs=4, batch_size=16, lr=3e-3, eval_batch_size=64)


def make():
    torch.manual_seed(0)
    return create_model("mlp_student", 4, in_shape=(1, 8, 8))


def test_loss_goes_down_and_history_is_complete():
    data = tiny_dataset()
    hist = fit(make(), build_loss("ce"), data, CFG, progress=False)
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    assert hist[-1]["train_loss"] < 0.5 * hist[0]["train_loss"]
    assert {"train_ce", "train_acc", "val_acc", "test_acc", "time_s", "eval_s", "cpu_s", "lr"} <= set(hist[0])
    assert all(0 < h["eval_s"] < h["time_s"] for h in hist)
    assert hist[-1]["train_acc"] > 0.9


def test_resume_after_interruption_equals_uninterrupted(tmp_path):
    data = tiny_dataset()
    full = fit(make(), build_loss("ce"), data, CFG, progress=False)
    ck = tmp_path / "ck.pt"
    fit(make(), build_loss("ce"), data, TrainConfig(**{**CFG.__dict__, "epochs": 2}), checkpoint=ck, progress=False)
    assert torch.load(ck, weights_only=False)["epoch"] == 1  # "interrupted" after epoch 2
    model = make()
    resumed = fit(model, build_loss("ce"), data, CFG, checkpoint=ck, progress=False)
    assert [h["epoch"] for h in resumed] == [1, 2, 3, 4]
    for a, b in zip(full, resumed):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
        assert a["val_acc"] == b["val_acc"]


def test_same_seed_same_result_on_cpu():
    data = tiny_dataset()
    a = fit(make(), build_loss("ce"), data, CFG, progress=False)
    b = fit(make(), build_loss("ce"), data, CFG, progress=False)
    assert [h["train_loss"] for h in a] == [h["train_loss"] for h in b]


def test_nan_loss_stops_with_a_clear_message():
    data = tiny_dataset()
    model = make()
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLoss, match="Lower the learning rate"):
        fit(model, build_loss("ce"), data, CFG, progress=False)


def test_kd_through_fit_uses_teacher_and_records_terms(tmp_path):
    data = tiny_dataset()
    teacher = create_model("mlp_teacher", 4, in_shape=(1, 8, 8))
    fit(teacher, build_loss("ce"), data, CFG, progress=False)
    student = make()
    pair = describe_pair(student, teacher, (1, 8, 8), 4)
    hist = fit(student, build_loss("kd", pair, T=4.0, alpha=0.5), data, CFG, teacher=teacher,
               cache_dir=tmp_path, progress=False)
    assert "train_kd" in hist[0] and hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert list(tmp_path.glob("teacher_outputs_*.pt"))  # cached next to the teacher


def test_lr_schedules():
    assert lr_factor("constant", 5, 10) == 1
    assert lr_factor("cosine", 0, 10) == 1 and lr_factor("cosine", 5, 10) == pytest.approx(0.5)
    assert lr_factor("step", 4, 10) == 1 and lr_factor("step", 5, 10) == pytest.approx(0.1)
    assert lr_factor("step", 8, 10) == pytest.approx(0.01)
    with pytest.raises(ValueError):
        lr_factor("warp", 0, 1)


def test_precision_setting_resolves_per_device(monkeypatch):
    from kd_helpers.core import util
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert util.autocast_dtype("fp32", cpu) is None
    assert util.autocast_dtype("bf16", cpu) is torch.bfloat16
    assert util.autocast_dtype("auto", cuda) is torch.float16
    monkeypatch.setattr(util, "cpu_has_native_bf16", lambda: True)
    assert util.autocast_dtype("auto", cpu) is torch.bfloat16
    monkeypatch.setattr(util, "cpu_has_native_bf16", lambda: False)  # emulated bf16 would be slower
    assert util.autocast_dtype("auto", cpu) is None
    with pytest.raises(ValueError, match="auto, fp32, bf16 or fp16"):
        util.autocast_dtype("half", cpu)


def test_bf16_training_is_recorded_and_follows_fp32():
    data = tiny_dataset()
    runs = {p: fit(make(), build_loss("ce"), data, TrainConfig(**{**CFG.__dict__, "precision": p}), progress=False)
            for p in ("fp32", "bf16")}
    assert {h["precision"] for h in runs["fp32"]} == {"fp32"}
    assert {h["precision"] for h in runs["bf16"]} == {"bf16"}
    for a, b in zip(runs["fp32"], runs["bf16"]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.1)
    assert runs["bf16"][-1]["train_acc"] > 0.9


def test_fused_optimizer_follows_the_unfused_update():
    data = tiny_dataset()
    runs = [fit(make(), build_loss("ce"), data,
                TrainConfig(**{**CFG.__dict__, "precision": "fp32", "fused_optimizer": f}), progress=False)
            for f in (True, False)]
    for a, b in zip(*runs):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    for name in ("adam", "adamw", "sgd"):
        for fused in (True, False):
            model = make()
            opt = make_optimizer(model.parameters(), TrainConfig(optimizer=name, fused_optimizer=fused))
            model(torch.randn(4, 1, 8, 8))[0].sum().backward()
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                opt.step()
            ops = {e.name for e in prof.events()}
            assert any("_fused_" in op for op in ops) == fused, (name, fused, sorted(ops)[:20])


class SabotagedLastEpoch(torch.nn.Module):
    """CE, except in the last epoch, where it trains towards the wrong labels: validation accuracy
    collapses there, so selection must fall on an earlier epoch."""
    requires_teacher, teacher_feats, name = False, False, "sabotage"

    def start_epoch(self, epoch, epochs):
        self.flip = epoch == epochs - 1

    def extra_logits(self, x, out):
        return {}

    def forward(self, s_out, t_out, y, x=None, idx=None):
        return {"ce": torch.nn.functional.cross_entropy(s_out[0], (y + 1) % 4 if self.flip else y)}


def test_the_best_validation_epoch_is_selected_and_restored(tmp_path):
    from kd_helpers.core.train import predict
    from kd_helpers.core.evaluate import accuracy
    data = tiny_dataset()
    cfg = TrainConfig(**{**CFG.__dict__, "precision": "fp32", "epochs": 5, "lr": 1e-2})
    model = make()
    hist = fit(model, SabotagedLastEpoch(), data, cfg, progress=False, checkpoint=tmp_path / "ck.pt")
    assert hist[-1]["val_acc"] < max(h["val_acc"] for h in hist[:-1])      # the sabotage worked
    chosen = [h for h in hist if h["selected"]]
    assert len(chosen) == 1 and chosen[0]["epoch"] < 5
    assert chosen[0]["val_acc"] == max(h["val_acc"] for h in hist)
    assert chosen[0]["epoch"] == min(h["epoch"] for h in hist if h["val_acc"] == chosen[0]["val_acc"])  # earliest
    # the model left behind is that epoch's: its accuracies are the selected row's (fp32 throughout)
    logits, _ = predict(model, data, "val")
    assert accuracy(logits, data.y["val"]) == chosen[0]["val_acc"]
    logits, _ = predict(model, data, "test")
    assert accuracy(logits, data.y["test"]) == chosen[0]["test_acc"]
    # a run resumed after its last checkpoint selects the same epoch with the same weights
    again = make()
    resumed = fit(again, SabotagedLastEpoch(), data, cfg, progress=False, checkpoint=tmp_path / "ck.pt")
    assert [h["selected"] for h in resumed] == [h["selected"] for h in hist]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_latency_blocks_follow_the_setting_and_are_recorded(monkeypatch):
    from kd_helpers.core import evaluate
    seen = []
    monkeypatch.setattr(evaluate, "latency_ms", lambda m, s, batch=1, repeats=20, number=10: seen.append(
        (batch, repeats)) or (1.0, 0.0))
    monkeypatch.setenv("KD_LATENCY_REPEATS", "12")
    assert evaluate.describe(torch.nn.Linear(4, 2), (4,))["latency_repeats"] == 12
    monkeypatch.delenv("KD_LATENCY_REPEATS")
    assert evaluate.describe(torch.nn.Linear(4, 2), (4,))["latency_repeats"] == 20
    assert seen == [(1, 12), (64, 3), (1, 20), (64, 5)]


def test_a_run_without_the_test_curve_never_reads_the_test_set(monkeypatch):
    """What a tuning trial does: train and select on validation, and never touch the test images."""
    data = tiny_dataset()
    real = type(data).batches

    def guarded(self, split="train", *a, **k):
        assert split != "test", "the test set was read"
        return real(self, split, *a, **k)
    monkeypatch.setattr(type(data), "batches", guarded)
    hist = fit(make(), build_loss("ce"), data, TrainConfig(**{**CFG.__dict__, "test_curve": False}), progress=False)
    assert all("test_acc" not in h and "val_acc" in h for h in hist) and sum(h["selected"] for h in hist) == 1
    with pytest.raises(AssertionError, match="the test set was read"):   # the guard itself works
        fit(make(), build_loss("ce"), data, CFG, progress=False)
