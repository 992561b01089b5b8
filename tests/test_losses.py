"""Each loss: hand/independent reference, gradients reach student and connectors,
zero when student equals teacher (where implied), shape mismatches, registry-wide step."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kd_helpers.core.losses import LOSSES, Pair, build_loss, describe_pair
from kd_helpers.core.losses.at import at_loss
from kd_helpers.core.losses.dist import dist_terms
from kd_helpers.core.losses.dkd import dkd_terms
from kd_helpers.core.losses.kd import kd_div
from kd_helpers.core.losses.rkd import angle_loss, pairwise_distance_loss
from kd_helpers.core.models import create_model



pytestmark = pytest.mark.usefixtures("float64")   # conftest.py


def np_softmax(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def huber(a, b):
    d = np.abs(np.asarray(a) - np.asarray(b))
    return np.where(d < 1, 0.5 * d ** 2, d - 0.5).mean()


S = torch.tensor([[1.0, 2.0, 0.5], [0.3, -1.0, 2.0]], dtype=torch.float64)
T_ = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.5, 3.0]], dtype=torch.float64)
Y = torch.tensor([1, 2])


def vec_pair(ds=3, dt=5, k=3):
    return Pair(num_classes=k, s_shapes=[(ds,), (ds,)], t_shapes=[(dt,), (dt,)])


# ------------------------------------------------------------------ KD
def test_kd_by_hand():
    T = 2.0
    pt, ps = np_softmax(T_.numpy() / T), np_softmax(S.numpy() / T)
    kl = (pt * np.log(pt / ps)).sum(1).mean() * T * T
    assert math.isclose(kd_div(S, T_, T).item(), kl, rel_tol=1e-10)
    loss = build_loss("kd", vec_pair(), T=T, alpha=0.3)
    terms = loss((S, []), (T_, []), Y)
    ce = -np.log(np_softmax(S.numpy())[[0, 1], [1, 2]]).mean()
    assert math.isclose(terms["ce"].item(), 0.3 * ce, rel_tol=1e-10)
    assert math.isclose(terms["kd"].item(), 0.7 * kl, rel_tol=1e-10)


def test_kd_zero_when_equal_and_gradient():
    s = S.clone().requires_grad_()
    assert kd_div(T_, T_, 4.0).abs().item() < 1e-12
    kd_div(s, T_, 4.0).backward()
    assert s.grad.abs().sum() > 0


# ------------------------------------------------------------------ FitNets
def test_fitnets_two_stages_by_hand():
    pair = vec_pair(ds=3, dt=5)
    loss = build_loss("fitnets", pair, stage1_frac=0.5, T=2.0, alpha=0.1)
    g = torch.randn(4, 3)
    h = torch.randn(4, 5)
    s_out, t_out = (torch.randn(4, 3), [torch.randn(4, 3), g]), (torch.randn(4, 3), [h, torch.randn(4, 5)])
    # middle layer of 2 features is index 0; the student's guided layer index 0 too
    assert loss.hint_layer == 0 and loss.guided_layer == 0
    loss.start_epoch(0, 4)
    terms = loss(s_out, t_out, torch.tensor([0, 1, 2, 0]))
    W, b = loss.regressor.weight.detach().numpy(), loss.regressor.bias.detach().numpy()
    ref = 0.5 * ((s_out[1][0].numpy() @ W.T + b - h.numpy()) ** 2).mean()
    assert set(terms) == {"hint"} and math.isclose(terms["hint"].item(), ref, rel_tol=1e-10)
    loss.start_epoch(2, 4)
    assert set(loss(s_out, t_out, torch.tensor([0, 1, 2, 0]))) == {"ce", "kd"}


def test_fitnets_stage1_trains_only_up_to_the_guided_layer():
    student, teacher = create_model("mlp_fitnet", 10), create_model("mlp_teacher", 10)
    pair = describe_pair(student, teacher, (1, 28, 28), 10)
    assert pair.s_shapes[1] == (300,) and pair.t_shapes[0] == (1200,)
    loss = build_loss("fitnets", pair)
    assert loss.guided_layer == 1 and loss.hint_layer == 0  # 2nd hidden layer -> 1200-d hint
    loss.start_epoch(0, 8)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        t = teacher(x)
    sum(loss(student(x), t, torch.zeros(4, dtype=torch.long)).values()).backward()
    assert student.layers[1][0].weight.grad.abs().sum() > 0
    assert loss.regressor.weight.grad.abs().sum() > 0
    assert student.layers[2][0].weight.grad is None and student.head.weight.grad is None


# ------------------------------------------------------------------ RKD
def test_rkd_distance_and_angle_by_hand():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(4, 3)), rng.normal(size=(4, 6))

    def dists(e):
        d = np.array([[np.linalg.norm(e[i] - e[j]) for j in range(4)] for i in range(4)])
        off = ~np.eye(4, dtype=bool)
        return (d / d[off].mean())[off]

    def angles(e):
        out = []
        for j in range(4):
            for i in range(4):
                for k in range(4):
                    a, b = e[i] - e[j], e[k] - e[j]
                    na, nb = np.linalg.norm(a), np.linalg.norm(b)
                    out.append(0.0 if na == 0 or nb == 0 else a @ b / (na * nb))
        return np.array(out)
    st, tt = torch.tensor(s), torch.tensor(t)
    assert math.isclose(pairwise_distance_loss(st, tt).item(), huber(dists(s), dists(t)), rel_tol=1e-9)
    assert math.isclose(angle_loss(st, tt).item(), huber(angles(s), angles(t)), rel_tol=1e-9)
    # relations are scale-free: a scaled copy of the teacher has zero loss
    assert pairwise_distance_loss(2 * tt, tt).item() < 1e-12 and angle_loss(3 * tt, tt).item() < 1e-12


# ------------------------------------------------------------------ feature KD
def test_feature_kd_by_hand_and_identity_connector():
    loss = build_loss("feature_kd", vec_pair(ds=4, dt=4), T=1.0, alpha=0.2, beta=0.5)
    fs, ft = torch.randn(2, 4), torch.randn(2, 4)
    terms = loss((S, [fs, fs]), (T_, [ft, ft]), Y)
    assert isinstance(loss.connector, torch.nn.Identity)
    assert math.isclose(terms["feat"].item(), 0.5 * ((fs - ft) ** 2).mean().item(), rel_tol=1e-10)
    assert math.isclose(terms["kd"].item(), 0.3 * kd_div(S, T_, 1.0).item(), rel_tol=1e-10)
    assert loss((S, [ft, ft]), (T_, [ft, ft]), Y)["feat"].item() == 0
    with pytest.raises(ValueError, match="alpha \\+ beta"):
        build_loss("feature_kd", vec_pair(), alpha=0.6, beta=0.6)


# ------------------------------------------------------------------ AT
def test_at_by_hand_and_spatial_mismatch():
    fs, ft = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4)

    def q(f):
        a = (f.numpy() ** 2).mean(1).reshape(2, -1)
        return a / np.linalg.norm(a, axis=1, keepdims=True)
    assert math.isclose(at_loss(fs, ft).item(), ((q(fs) - q(ft)) ** 2).mean(), rel_tol=1e-9)
    assert at_loss(ft, ft).item() < 1e-15
    big = torch.randn(2, 3, 8, 8)  # pooled down to 4x4 before comparing
    pooled = F.avg_pool2d(big, 2)
    assert math.isclose(at_loss(big, ft).item(), at_loss(pooled, ft).item(), rel_tol=1e-9)


def test_at_refuses_mlps_clearly():
    with pytest.raises(ValueError, match="spatial feature maps"):
        build_loss("at", vec_pair())


# ------------------------------------------------------------------ DIST
def test_dist_by_hand():
    tau = 2.0
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    ps, pt = np_softmax(zs.numpy() / tau), np_softmax(zt.numpy() / tau)
    inter = tau ** 2 * (1 - np.mean([np.corrcoef(ps[i], pt[i])[0, 1] for i in range(6)]))
    intra = tau ** 2 * (1 - np.mean([np.corrcoef(ps[:, c], pt[:, c])[0, 1] for c in range(4)]))
    a, b = dist_terms(zs, zt, tau)
    assert math.isclose(a.item(), inter, abs_tol=1e-5) and math.isclose(b.item(), intra, abs_tol=1e-5)
    a, b = dist_terms(zt, zt, tau)  # zero up to the eps that guards the correlation's denominator
    assert abs(a.item()) < 1e-4 and abs(b.item()) < 1e-4


# ------------------------------------------------------------------ DKD
def test_dkd_by_hand():
    T = 2.0
    ps, pt = np_softmax(S.numpy() / T), np_softmax(T_.numpy() / T)
    tck, nck = [], []
    for i, y in enumerate(Y.tolist()):
        bs, bt = np.array([ps[i, y], 1 - ps[i, y]]), np.array([pt[i, y], 1 - pt[i, y]])
        tck.append((bt * np.log(bt / bs)).sum())
        others = [c for c in range(3) if c != y]
        qs, qt = np_softmax(S.numpy()[i, others] / T), np_softmax(T_.numpy()[i, others] / T)
        nck.append((qt * np.log(qt / qs)).sum())
    tckd, nckd = dkd_terms(S, T_, Y, T)
    assert math.isclose(tckd.item(), np.mean(tck) * T * T, rel_tol=1e-6)
    assert math.isclose(nckd.item(), np.mean(nck) * T * T, rel_tol=1e-6)
    z = dkd_terms(T_, T_, Y, T)
    assert abs(z[0].item()) < 1e-9 and abs(z[1].item()) < 1e-9


def test_dkd_warmup_ramps():
    loss = build_loss("dkd", vec_pair(), warmup=4)
    loss.start_epoch(0, 10)
    assert loss.ramp == 0.25
    loss.start_epoch(5, 10)
    assert loss.ramp == 1.0


# ------------------------------------------------------------------ DML
def test_dml_by_hand_and_peer_gradients():
    student = create_model("mlp_student_nodrop", 3, in_shape=(1, 2, 2))
    pair = describe_pair(student, None, (1, 2, 2), 3, make_student=lambda: create_model("mlp_student_nodrop", 3, in_shape=(1, 2, 2)))
    loss = build_loss("dml", pair)
    x = torch.randn(2, 1, 2, 2)
    s_out = student(x)
    terms = loss(s_out, None, Y, x=x)
    zp = loss.peers[0](x)[0]
    p1, p2 = np_softmax(s_out[0].detach().numpy()), np_softmax(zp.detach().numpy())
    assert math.isclose(terms["kl"].item(), (p2 * np.log(p2 / p1)).sum(1).mean(), rel_tol=1e-8)
    assert math.isclose(terms["peer_kl"].item(), (p1 * np.log(p1 / p2)).sum(1).mean(), rel_tol=1e-8)
    sum(terms.values()).backward()
    assert all(p.grad is not None for p in loss.peers.parameters())
    assert all(p.grad is not None for p in student.parameters())
    assert set(loss.extra_logits(x, s_out)) == {"peer1"}


# ------------------------------------------------------------------ BYOT
def test_byot_routes_every_exit_into_the_reference_terms():
    """The terms themselves are checked against the reference code (test_loss_fixtures.py); here:
    each shallow exit's bottleneck and classifier feed them, and the deep targets are detached."""
    student = create_model("cnn_student", 3, in_shape=(3, 8, 8))
    pair = describe_pair(student, None, (3, 8, 8), 3)
    loss = build_loss("byot", pair, alpha=0.3, lam=0.1, T=2.0).eval()
    assert len(loss.exits) == 2
    x = torch.randn(4, 3, 8, 8)
    y = torch.tensor([0, 1, 2, 0])
    out = student(x)
    terms = loss(out, None, y)
    ref_ce = ref_kd = ref_hint = 0.0
    for head, f in zip(loss.exits, out[1][:-1]):
        e = head["bottleneck"](f)
        z = head["fc"](e)
        pt = np_softmax(out[0].detach().numpy() / 2.0)
        log_q = np.log(np_softmax(z.detach().numpy() / 2.0))
        ref_ce += 0.7 * F.cross_entropy(z, y).item()
        ref_kd += 0.3 * 4.0 * -(pt * log_q).sum(1).mean()
        ref_hint += 0.1 * ((e - out[1][-1]) ** 2).sum().item()
    assert math.isclose(terms["ce"].item(), 0.7 * F.cross_entropy(out[0], y).item(), rel_tol=1e-8)
    assert math.isclose(terms["exit_ce"].item(), ref_ce, rel_tol=1e-8)
    assert math.isclose(terms["exit_kd"].item(), ref_kd, rel_tol=1e-8)
    assert math.isclose(terms["exit_hint"].item(), ref_hint, rel_tol=1e-8)
    assert set(loss.extra_logits(x, out)) == {"exit1", "exit2"}
    (terms["exit_kd"] + terms["exit_hint"]).backward()
    assert student.head[1].weight.grad is None   # the deep exit is a target, not trained by these terms


# ------------------------------------------------------------------ SRD
@pytest.mark.parametrize("name", ["srd", "srd_dist"])
def test_srd_on_vectors_goes_through_the_frozen_teacher_head(name):
    """MLPs have no spatial map: the connector is Linear + BN + ReLU on the embeddings."""
    student, teacher = create_model("mlp_student", 10), create_model("mlp_teacher", 10).eval()
    teacher.requires_grad_(False)
    pair = describe_pair(student, teacher, (1, 28, 28), 10)
    loss = build_loss(name, pair).eval()
    assert not loss.spatial and isinstance(loss.connector[0], torch.nn.Linear)
    assert not any(p is q for p in loss.parameters() for q in teacher.parameters())  # head not trained
    x = torch.randn(4, 1, 28, 28)
    s_out, t_out = student(x), teacher(x)
    terms = loss(s_out, t_out, torch.zeros(4, dtype=torch.long))
    f = loss.connector(s_out[1][-1])
    assert math.isclose(terms["fm"].item(), F.mse_loss(f, t_out[1][-1]).item(), rel_tol=1e-9)
    if name == "srd":   # the seed's beta = 2
        assert math.isclose(terms["sr"].item(), 2 * F.mse_loss(teacher.head(f), t_out[0]).item(), rel_tol=1e-9)
    else:  # Pearson on the raw teacher-head logits, by hand in numpy (the seed's beta = 10)
        z_sr, z_t = teacher.head(f).detach().numpy(), t_out[0].detach().numpy()

        def rho(a, b):
            a, b = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
            return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-8)
        assert math.isclose(terms["sr_inter"].item(), 10 * (1 - rho(z_sr, z_t).mean()), rel_tol=1e-6)
        assert math.isclose(terms["sr_intra"].item(), 10 * (1 - rho(z_sr.T, z_t.T).mean()), rel_tol=1e-6)
    sum(terms.values()).backward()
    assert all(p.grad is not None for p in loss.connector.parameters())
    assert student.layers[0][0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("s_name,t_name", [("cnn_student", "cnn_teacher"), ("resnet8", "resnet14")])
def test_srd_on_maps_connects_the_last_map_and_uses_the_teachers_tail(s_name, t_name):
    torch.set_default_dtype(torch.float32)
    student, teacher = create_model(s_name, 10), create_model(t_name, 10).eval().requires_grad_(False)
    pair = describe_pair(student, teacher, (3, 32, 32), 10)
    loss = build_loss("srd", pair).train()
    assert loss.spatial and isinstance(loss.connector[0], torch.nn.Conv2d)
    x = torch.randn(4, 3, 32, 32)
    s_out, t_out = student(x), teacher(x)
    # the teacher's tail from its own last map gives its own logits
    torch.testing.assert_close(teacher.classify_map(t_out[1][-2]), t_out[0])
    terms = loss(s_out, t_out, torch.zeros(4, dtype=torch.long))
    f = loss.connector(s_out[1][-2])
    assert math.isclose(terms["fm"].item(), F.mse_loss(f, t_out[1][-2]).item(), rel_tol=1e-5)


# ------------------------------------------------------------------ registry-wide
PAIRS = {"mlp": ("mlp_student", "mlp_teacher", (1, 28, 28)), "cnn": ("cnn_student", "cnn_teacher", (3, 32, 32))}


@pytest.mark.parametrize("family", PAIRS)
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_method_takes_one_step(name, family):
    torch.set_default_dtype(torch.float32)
    s_name, t_name, shape = PAIRS[family]
    student = create_model(s_name, 10, in_shape=shape)
    teacher = create_model(t_name, 10, in_shape=shape).eval().requires_grad_(False)
    pair = describe_pair(student, teacher, shape, 10, make_student=lambda: create_model(s_name, 10, in_shape=shape))
    if name == "at" and family == "mlp":
        with pytest.raises(ValueError, match="spatial"):
            build_loss(name, pair)
        return
    loss = build_loss(name, pair)
    loss.start_epoch(0, 4)  # FitNets: stage 1 (hints) uses its regressor
    params = list(student.parameters()) + list(loss.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    before = [p.detach().clone() for p in student.parameters()]
    x, y = torch.randn(8, *shape), torch.randint(0, 10, (8,))
    t_out = teacher(x) if loss.requires_teacher else None
    total = sum(loss(student(x), t_out, y, x=x).values())
    assert torch.isfinite(total)
    total.backward()
    for p in loss.parameters():  # every connector/head/peer gets a gradient
        assert p.grad is not None, name
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, student.parameters()))


# the reference studies' teacher -> student pairs (kd_helpers.store.presets.PAIRS), on tiny 16x16 inputs
RESIDUAL_PAIRS = [("wrn_16_4", "wrn_40_4"), ("wrn_40_1", "wrn_40_2"), ("wrn_16_2", "wrn_40_4"),
                  ("mobilenetv2", "wrn_40_4"), ("mobilenetv2", "resnet18"), ("resnet8x4", "resnet32x4"),
                  ("resnet20", "resnet56"), ("wrn_16_2", "wrn_40_2"), ("vgg8", "vgg13"), ("resnet18", "resnet50"),
                  ("mobilenetv2", "resnet34")]


@pytest.mark.parametrize("s_name,t_name", RESIDUAL_PAIRS)
def test_every_method_takes_one_step_on_the_residual_pairs(s_name, t_name):
    torch.manual_seed(0)
    shape = (3, 16, 16)
    student = create_model(s_name, 10, in_shape=shape)
    teacher = create_model(t_name, 10, in_shape=shape).eval().requires_grad_(False)
    make = lambda: create_model(s_name, 10, in_shape=shape)
    pair = describe_pair(student, teacher, shape, 10, make_student=make)
    x, y = torch.randn(4, *shape), torch.randint(0, 10, (4,))
    t_out = teacher(x)
    for name in sorted(LOSSES):
        loss = build_loss(name, pair)
        loss.start_epoch(0, 4)
        student.zero_grad()
        total = sum(loss(student(x), t_out if loss.requires_teacher else None, y, x=x).values())
        assert torch.isfinite(total), name
        total.backward()
        assert all(p.grad is not None for p in loss.parameters()), name
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters()), name


def test_unknown_method_and_missing_teacher_are_clear():
    with pytest.raises(ValueError, match="Available: .*dkd"):
        build_loss("nope")
    with pytest.raises(ValueError, match="distils from a teacher"):
        build_loss("kd", None)
    with pytest.raises(TypeError, match="accepts: T, alpha"):
        build_loss("kd", vec_pair(), temperature=3)


def test_incompatible_feature_shapes_are_clear():
    pair = Pair(10, s_shapes=[(16, 8, 8), (32,)], t_shapes=[(1200,), (1200,)])
    with pytest.raises(ValueError, match="both vectors or both spatial maps"):
        build_loss("feature_kd", pair, s_layer=0, t_layer=0)
    with pytest.raises(ValueError, match="penultimate embeddings"):
        build_loss("srd", Pair(10, s_shapes=[(16, 8, 8)], t_shapes=[(1200,)], teacher=torch.nn.Linear(1, 1)))


@pytest.mark.parametrize("name", sorted(set(LOSSES) - {"at"}))
def test_every_method_under_bf16_autocast_matches_fp32(name):
    """``fit`` calls losses inside autocast with fp32 model outputs: the terms must stay fp32 and
    within bf16 rounding of the fp32 values (a softmax or RKD Gram matrix in bf16 would not)."""
    torch.set_default_dtype(torch.float32)
    shape = (1, 28, 28)
    torch.manual_seed(0)
    student = create_model("mlp_student", 10, in_shape=shape)
    teacher = create_model("mlp_teacher", 10, in_shape=shape).eval().requires_grad_(False)
    pair = describe_pair(student, teacher, shape, 10, make_student=lambda: create_model("mlp_student", 10, in_shape=shape))
    loss = build_loss(name, pair).eval()  # eval: BatchNorm in connectors uses fixed statistics
    x, y = torch.randn(64, *shape), torch.randint(0, 10, (64,))
    with torch.no_grad():
        s_out, t_out = student(x), teacher(x) if loss.requires_teacher else None
        ref = loss(s_out, t_out, y, x=x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = loss(s_out, t_out, y, x=x)
    for k, v in ref.items():
        if torch.is_tensor(v):
            assert got[k].dtype == torch.float32, k
            assert float(got[k]) == pytest.approx(float(v), rel=2e-2, abs=1e-4), k


def test_rkd_angle_ignores_autocast():
    torch.set_default_dtype(torch.float32)
    torch.manual_seed(0)
    s, t = torch.randn(32, 800) + 3, torch.randn(32, 1200) + 3  # off-centre: the Gram terms cancel
    ref = angle_loss(s, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = angle_loss(s, t)
    assert float(got) == pytest.approx(float(ref), rel=1e-5)


def test_rkd_ref_is_the_reference_studys_distance_only_rkd():
    from kd_helpers.experiment import spec_for
    spec = spec_for("rkd_ref", "mnist5k", "smoke")
    assert spec.method == "rkd" and spec.run == "rkd_ref" and (spec.loss["w_d"], spec.loss["w_a"]) == (100.0, 0.0)
    loss = build_loss("rkd", vec_pair(), **spec.loss)
    s, t = torch.randn(6, 3), torch.randn(6, 5)
    terms = loss((torch.randn(6, 3), [s, s]), (torch.randn(6, 3), [t, t]), torch.zeros(6, dtype=torch.long))
    assert terms["rkd_a"].item() == 0.0
    assert math.isclose(terms["rkd_d"].item(), 100 * pairwise_distance_loss(s, t).item(), rel_tol=1e-12)
