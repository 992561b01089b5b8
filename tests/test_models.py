import pytest
import torch

from kd_helpers.models import MODELS, count_params, create_model

EXPECTED = {"mlp_teacher": 2.39e6, "mlp_student": 1.28e6, "mlp_fitnet": 0.51e6,
            "cnn_teacher": 4.46e6, "cnn_student": 1.07e6}


def shape_of(name):
    return (1, 28, 28) if name.startswith("mlp") else (3, 32, 32)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_backward_and_output_contract(name):
    m = create_model(name, num_classes=10, in_shape=shape_of(name))
    x = torch.randn(4, *shape_of(name), requires_grad=False)
    logits, feats = m(x)
    assert logits.shape == (4, 10)
    assert isinstance(feats, list) and len(feats) >= 2 and feats[-1].dim() == 2  # embedding last
    (logits.sum() + sum(f.mean() for f in feats)).backward()
    assert all(p.grad is not None for p in m.parameters())


@pytest.mark.parametrize("name,expected", EXPECTED.items())
def test_parameter_counts_match_the_reference_study(name, expected):
    n = count_params(create_model(name, 10, in_shape=shape_of(name)))
    assert abs(n - expected) / expected < 0.02, n


def test_thin_deep_cnn_is_under_100k():
    assert count_params(create_model("cnn_fitnet", 10)) < 100_000


def test_unknown_model_lists_available():
    with pytest.raises(ValueError, match="Available: .*mlp_teacher"):
        create_model("resnet1000")
