import pytest
import torch

from kd_helpers.core import prune
from kd_helpers.core.evaluate import flops
from kd_helpers.experiment import _save_model, distill, load_model, train_teacher
from kd_helpers.prune_sweep import prune_and_finetune, speed_check
from kd_helpers.core.losses import build_loss
from kd_helpers.core.models import count_params, create_model
from kd_helpers.core.train import TrainConfig, fit
from conftest import tiny_dataset


def test_unstructured_reaches_sparsity_and_finetuning_keeps_zeros():
    data = tiny_dataset()
    model = create_model("mlp_student", 4, in_shape=(1, 8, 8))
    prune.unstructured(model, 0.7)
    assert prune.sparsity(model) == pytest.approx(0.7, abs=1e-3)
    fit(model, build_loss("ce"), data, TrainConfig(epochs=2, batch_size=16, lr=1e-2), progress=False)
    prune.make_permanent(model)
    assert prune.sparsity(model) == pytest.approx(0.7, abs=1e-3)
    assert not any(n.endswith("_orig") for n, _ in model.named_parameters())


@pytest.mark.parametrize("name,shape", [("mlp_student", (1, 28, 28)), ("mlp_student_mod", (1, 28, 28)),
                                        ("cnn_student", (3, 32, 32)), ("cnn_fitnet", (3, 32, 32))])
def test_structured_shrinks_and_still_trains(name, shape, tmp_path):
    model = create_model(name, 10, in_shape=shape)
    p0, f0 = count_params(model), flops(model, shape)
    prune.structured(model, 0.5, shape)
    assert count_params(model) < 0.6 * p0 and flops(model, shape) < 0.6 * f0
    x = torch.randn(4, *shape)
    logits, feats = model(x)
    assert logits.shape == (4, 10)
    logits.sum().backward()
    _save_model(model, tmp_path / "m.pt", name, shape, 10)
    blob = torch.load(tmp_path / "m.pt", weights_only=True)   # tensors and plain values only, no pickled modules
    assert blob["resized"] and "module" not in blob
    again = load_model(tmp_path / "m.pt")
    assert count_params(again) == count_params(model)
    assert torch.allclose(again.eval()(x)[0], model.eval()(x)[0])


def test_prune_and_finetune_run_is_stored(tmp_path):
    train_teacher("mnist5k", "smoke", results_dir=tmp_path)
    distill("baseline", "mnist5k", "smoke", results_dir=tmp_path)
    for kind in prune.KINDS:
        r = prune_and_finetune("baseline", kind, 0.5, "kd", dataset="mnist5k", profile="smoke",
                                     results_dir=tmp_path)[0]
        m = r["metrics"]
        assert m["prune_kind"] == kind and "test_acc_before_ft" in m and m["prune_source"] == "baseline"
        if kind == "unstructured":
            assert m["sparsity"] == pytest.approx(0.5, abs=0.01) and m["params_nonzero"] < 0.55 * m["params"]
        else:
            assert m["params"] < 0.5 * m["params_before_prune"]
        model = load_model(r["dir"] / "model.pt", in_shape=(1, 28, 28))
        assert model(torch.randn(2, 1, 28, 28))[0].shape == (2, 10)

    # the speed check re-times the models from their weights: on a published store (no student
    # weights) it returns nothing instead of failing, and the notebook says why
    from kd_helpers.publish import publish
    from kd_helpers.store.results import load_results
    speed = speed_check(load_results(tmp_path), "baseline", batches=(1,))
    assert set(speed.run) == {"baseline", "prune_baseline__amount=0.5__finetune=kd__pruning=unstructured",
                              "prune_baseline__amount=0.5__finetune=kd__pruning=structured"}
    assert speed.set_index("run").speedup["baseline"] == 1.0
    publish(tmp_path, tmp_path / "pub")
    assert speed_check(load_results(tmp_path / "pub"), "baseline", batches=(1,)).empty


def test_unknown_pruning_kind():
    with pytest.raises(ValueError, match="Available: unstructured, structured"):
        prune.prune(create_model("mlp_student", 4, in_shape=(1, 8, 8)), "random", 0.5, (1, 8, 8))
