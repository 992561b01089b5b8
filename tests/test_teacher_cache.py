import torch

from kd_helpers.core.losses import build_loss, describe_pair
from kd_helpers.core.models import create_model
from kd_helpers.core.teacher_cache import TeacherOutputs, teacher_key
from kd_helpers.core.train import TrainConfig, fit
from conftest import tiny_dataset


def test_cached_and_uncached_kd_losses_agree(tmp_path):
    data = tiny_dataset(shape=(3, 8, 8))
    teacher = create_model("cnn_teacher", 4, in_shape=(3, 8, 8)).eval()
    student = create_model("cnn_student", 4, in_shape=(3, 8, 8))
    for method in ("kd", "feature_kd", "rkd"):
        loss = build_loss(method, describe_pair(student, teacher, (3, 8, 8), 4)).eval()
        cached = TeacherOutputs(teacher, data, feats=True, cached=True, cache_dir=tmp_path)
        live = TeacherOutputs(teacher, data, feats=True, cached=False)
        assert cached.is_cached and not live.is_cached
        x, y, idx = next(data.batches("train", 16, shuffle=True, generator=torch.Generator().manual_seed(0)))
        s = student(x)
        a, b = loss(s, cached(x, idx), y), loss(s, live(x, idx), y)
        for k in a:  # fp16 storage: equal up to half-precision rounding
            assert torch.allclose(a[k], b[k], rtol=2e-3, atol=1e-4), (method, k, a[k], b[k])


def test_cache_is_reused_and_invalidated_when_the_teacher_changes(tmp_path):
    data = tiny_dataset()
    teacher = create_model("mlp_teacher", 4, in_shape=(1, 8, 8)).eval()
    TeacherOutputs(teacher, data, feats=False, cached=True, cache_dir=tmp_path)
    files = list(tmp_path.glob("teacher_outputs_*.pt"))
    assert len(files) == 1
    again = TeacherOutputs(teacher, data, feats=False, cached=True, cache_dir=tmp_path)
    assert again.path == files[0]
    k1 = teacher_key(teacher, data, False)
    with torch.no_grad():
        teacher.head.bias.add_(1.0)
    assert teacher_key(teacher, data, False) != k1
    changed = TeacherOutputs(teacher, data, feats=False, cached=True, cache_dir=tmp_path)
    assert changed.path != files[0] and len(list(tmp_path.glob("teacher_outputs_*.pt"))) == 2
    x, _, idx = next(data.batches("train", 8))
    with torch.no_grad():
        assert torch.allclose(changed(x, idx)[0], teacher(x)[0], atol=1e-2)
    assert teacher_key(teacher, data, True) != teacher_key(teacher, data, False)


def test_augmentation_runs_the_teacher_on_every_augmented_batch(tmp_path):
    data = tiny_dataset(shape=(3, 8, 8), augment=True)
    teacher = create_model("cnn_teacher", 4, in_shape=(3, 8, 8)).eval()
    student = create_model("cnn_student", 4, in_shape=(3, 8, 8))
    seen = []
    teacher.register_forward_hook(lambda m, inp, out: seen.append(len(inp[0])))
    loss = build_loss("kd", describe_pair(student, teacher, (3, 8, 8), 4))
    seen.clear()
    fit(student, loss, data, TrainConfig(epochs=2, batch_size=16), teacher=teacher, cache_dir=tmp_path,
        progress=False)
    assert not list(tmp_path.glob("teacher_outputs_*.pt"))  # no stale cached views
    assert sum(seen) == 2 * len(data.y["train"])  # one teacher pass per augmented image per epoch
