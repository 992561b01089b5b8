import pytest
import torch

from kd_helpers.core.models import MODELS, count_params, create_model

EXPECTED = {"mlp_teacher": 2.39e6, "mlp_student": 1.28e6, "mlp_fitnet": 0.51e6,
            "cnn_teacher": 4.46e6, "cnn_student": 1.07e6}


# The other reference studies' published counts, CIFAR-100 heads (100 classes)
EXPECTED_100 = {"wrn_40_4": 8.97e6, "wrn_16_4": 2.77e6, "wrn_40_2": 2.26e6, "wrn_40_1": 0.57e6, "wrn_16_2": 0.70e6,
                "resnet18": 11.22e6, "resnet32x4": 7.43e6, "resnet8x4": 1.23e6, "resnet56": 0.86e6, "resnet20": 0.28e6}


def shape_of(name):
    return (1, 28, 28) if name.startswith("mlp") else (3, 32, 32)


@pytest.mark.parametrize("name,expected", EXPECTED_100.items())
def test_parameter_counts_match_the_residual_reference_studies(name, expected):
    n = count_params(create_model(name, 100))
    assert abs(n - expected) / expected < 0.01, n


def test_mobilenetv2_count_and_strides():
    # the published 2.24M is the 10-class head's count (2.237M); with 100 classes it is 2.352M
    assert abs(count_params(create_model("mobilenetv2", 10)) - 2.24e6) / 2.24e6 < 0.01
    assert abs(count_params(create_model("mobilenetv2", 100)) - 2.352e6) / 2.352e6 < 0.01
    _, feats = create_model("mobilenetv2", 10)(torch.zeros(2, 3, 32, 32))
    assert [f.shape[-1] for f in feats[:-1]] == [32, 16, 8, 4]   # CIFAR strides: the stem keeps 32x32


def test_resnets_take_the_standard_stem_from_64_pixels():
    for size, first in ((32, 32), (64, 16), (224, 56)):
        _, feats = create_model("resnet18", 200, in_shape=(3, size, size))(torch.zeros(2, 3, size, size))
        assert feats[0].shape[-1] == first and feats[-1].shape == (2, 512)


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


# ----------------------------------------------------------------- the CPU dropout
def test_fast_dropout_keep_rate_is_binomial_and_exact_to_its_resolution():
    from scipy import stats as sps

    from kd_helpers.core.models import Dropout
    torch.manual_seed(0)
    for p in (0.1, 0.3, 0.5, 0.2):
        d = Dropout(p).train()
        assert abs((1 - d.keep) - p) <= 2 ** -16          # within 1/65536 of p
        kept = int((d(torch.ones(400, 1000)) != 0).sum())
        n = 400_000
        assert sps.binomtest(kept, n, d.keep).pvalue > 1e-3, p   # the keep rate it states
    # and not the rate of a slightly different p: 0.3 vs 0.31 is caught at this sample size
    d = Dropout(0.31).train()
    kept = int((d(torch.ones(400, 1000)) != 0).sum())
    assert sps.binomtest(kept, 400_000, 0.7).pvalue < 1e-6


def test_fast_dropout_scales_inverts_and_passes_the_gradient_through_the_mask():
    from kd_helpers.core.models import Dropout
    torch.manual_seed(1)
    d = Dropout(0.3).train()
    x = torch.randn(64, 300, requires_grad=True)
    y = d(x)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / d.keep)          # inverted scaling, exact keep rate
    assert y.mean().item() == pytest.approx(x.mean().item(), abs=0.02)
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / d.keep)        # gradient: the same mask and scale
    assert d(torch.ones(3, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_fast_dropout_is_deterministic_under_a_seed_and_the_identity_in_eval():
    from kd_helpers.core.models import Dropout
    d = Dropout(0.5).train()
    x = torch.ones(8, 1000)
    torch.manual_seed(7)
    a = d(x)
    torch.manual_seed(7)
    b = d(x)
    torch.manual_seed(8)
    c = d(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert d.eval()(x) is x and Dropout(0.0).train()(x) is x
    with pytest.raises(ValueError, match="Dropout probability"):
        Dropout(1.0)


def test_the_study_networks_use_the_fast_dropout_and_record_it():
    from kd_helpers.core.models import Dropout, network_config
    for name in ("mlp_teacher", "mlp_student", "cnn_student"):
        m = create_model(name)
        assert not any(type(x) is torch.nn.Dropout for x in m.modules())
        assert any(isinstance(x, Dropout) for x in m.modules()) and network_config(name)["version"] == 2
    assert network_config("mlp_student_nodrop")["version"] == 1   # nothing changed for it
