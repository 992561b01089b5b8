import numpy as np
import pytest
import torch

from kd_helpers.core.data import DataConfig, DatasetNotFoundError, crop_flip, load_dataset
from conftest import needs_cifar, shared_data_dir, tiny_dataset


def test_mnist5k_offline_shapes_dtypes_and_split():
    d = load_dataset("mnist5k", config=DataConfig(val_size=0.1))
    assert d.x["train"].dtype == torch.uint8 and d.y["train"].dtype == torch.int64
    assert d.input_shape == (1, 28, 28) and d.num_classes == 10
    assert len(d.y["train"]) + len(d.y["val"]) == 4000 and len(d.y["test"]) == 1000
    # validation images are held out of training (no identical image in both)
    tr = {bytes(t.numpy()) for t in d.x["train"]}
    assert not any(bytes(v.numpy()) in tr for v in d.x["val"])


def test_normalisation_uses_training_statistics():
    d = load_dataset("mnist5k")
    x = torch.cat([xb for xb, _, _ in d.batches("train", 1000)])
    assert x.dtype == torch.float32
    assert abs(x.mean().item()) < 1e-3 and abs(x.std().item() - 1) < 1e-2


def test_batches_cover_the_split_once_and_shuffle_is_seeded():
    d = tiny_dataset(n=50)
    idx = torch.cat([i for _, _, i in d.batches("train", 16, shuffle=True, generator=torch.Generator().manual_seed(1))])
    assert sorted(idx.tolist()) == list(range(50))
    again = torch.cat([i for _, _, i in d.batches("train", 16, shuffle=True, generator=torch.Generator().manual_seed(1))])
    assert torch.equal(idx, again)


def test_crop_flip_keeps_shape_and_is_random():
    x = torch.randint(0, 255, (32, 3, 32, 32), dtype=torch.uint8)
    a = crop_flip(x, generator=torch.Generator().manual_seed(0))
    b = crop_flip(x, generator=torch.Generator().manual_seed(1))
    assert a.shape == x.shape and a.dtype == torch.uint8
    assert not torch.equal(a, b) and not torch.equal(a, x)


def test_crop_flip_matches_a_per_sample_reference():
    x = torch.randint(0, 255, (6, 2, 8, 8), dtype=torch.uint8)
    g = torch.Generator().manual_seed(3)
    out = crop_flip(x, pad=2, generator=g)
    g = torch.Generator().manual_seed(3)
    dy, dx = torch.randint(0, 5, (6,), generator=g), torch.randint(0, 5, (6,), generator=g)
    flip = torch.rand(6, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(6):
        ref = padded[i, :, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8]
        assert torch.equal(out[i], ref.flip(-1) if flip[i] else ref)


def test_digit_jitter_shifts_up_to_two_pixels_and_never_mirrors():
    x = torch.zeros(512, 1, 28, 28, dtype=torch.uint8)
    x[:, 0, 10, 5] = 255   # one bright pixel left of centre: a mirror image would move it to column 22
    out = crop_flip(x, pad=2, generator=torch.Generator().manual_seed(0), flip=False)
    pos = out.flatten(1).argmax(1)
    rows, cols = pos // 28, pos % 28
    assert (out.flatten(1).amax(1) == 255).all()                       # a 2-pixel shift never loses it
    assert ((rows - 10).abs() <= 2).all() and ((cols - 5).abs() <= 2).all()
    assert len(set(zip(rows.tolist(), cols.tolist()))) == 25             # every shift in [-2, 2]^2 occurs
    d = load_dataset("digits", download=False)
    assert (d.jitter, d.flip, d.augment) == (2, False, False)   # digits: Hinton's jitter, off by default


def test_missing_dataset_says_where_it_looked_and_what_to_do(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        load_dataset("cifar10", tmp_path, download=False)
    msg = str(e.value)
    assert str(tmp_path) in msg and "KD_DATA_DIR" in msg and "data_batch_1" in msg


def test_unknown_dataset_lists_names():
    with pytest.raises(ValueError, match="Available: .*mnist5k"):
        load_dataset("imagenet")


def test_limits_take_a_class_mixed_subset():
    d = load_dataset("mnist5k", config=DataConfig(limit_train=100, limit_test=50))
    assert len(d.y["train"]) == 100 and len(d.y["test"]) == 50
    assert len(d.y["train"].unique()) >= 8  # the file is sorted by class: a prefix would be one class


@needs_cifar
def test_cifar10_reads_pickles_with_official_labels():
    d = load_dataset("cifar10", shared_data_dir(), DataConfig(val_size=0))
    assert d.input_shape == (3, 32, 32) and len(d.y["train"]) == 50000 and len(d.y["test"]) == 10000
    assert d.y["test"][:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert d.augment


@needs_cifar
def test_mnist_idx_files():
    d = load_dataset("mnist", shared_data_dir(), DataConfig(val_size=5000))
    assert len(d.y["train"]) == 55000 and len(d.y["test"]) == 10000
    assert torch.bincount(d.y["test"]).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# ------------------------------------------------------------------ Tiny-ImageNet, image trees, pairs
def tiny_imagenet_tree(root, wnids=("n01443537", "n01629819", "n01641577"), per_class=3, damage=None):
    """The official layout: train/<wnid>/images/*.JPEG, val/images/* + val/val_annotations.txt."""
    from PIL import Image
    base = root / "tiny-imagenet-200"
    for k, w in enumerate(wnids):
        (base / "train" / w / "images").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((64, 64, 3), 20 * k + i, dtype=np.uint8)).save(base / "train" / w / "images" / f"{w}_{i}.JPEG")
    (base / "val" / "images").mkdir(parents=True)
    lines = []
    for j, w in enumerate(reversed(wnids)):
        name = f"val_{j}.JPEG"
        Image.fromarray(np.full((64, 64, 3), 7 * j, dtype=np.uint8)).save(base / "val" / "images" / name)
        lines.append(f"{name}\t{damage or w}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


def test_tinyimagenet_reads_the_official_layout(tmp_path):
    from kd_helpers.core.data import _CACHE, load_dataset
    tiny_imagenet_tree(tmp_path)
    d = load_dataset("tinyimagenet", tmp_path, DataConfig(val_size=0), download=False)
    assert d.input_shape == (3, 64, 64) and d.num_classes == 3
    assert d.classes == ["n01443537", "n01629819", "n01641577"]    # sorted wnids = label numbers
    assert d.y["test"].tolist() == [2, 1, 0] and len(d.y["train"]) == 9
    assert d.augment   # crop + flip by default, like CIFAR
    _CACHE.clear()


def test_tinyimagenet_missing_or_damaged_is_named(tmp_path):
    from kd_helpers.core.data import DatasetDamagedError, DatasetNotFoundError, _CACHE, load_dataset
    with pytest.raises(DatasetNotFoundError, match="tiny-imagenet-200.zip"):
        load_dataset("tinyimagenet", tmp_path, download=False)
    tiny_imagenet_tree(tmp_path, damage="n99999999")
    with pytest.raises(DatasetDamagedError, match="val_annotations.txt.*names no class"):
        load_dataset("tinyimagenet", tmp_path, download=False)
    _CACHE.clear()


def test_imagefolder_size_and_a_tree_too_large_for_memory(tmp_path, monkeypatch):
    from kd_helpers.core import data
    from test_faults import image_tree
    image_tree(tmp_path, ["cat", "dog"], ["cat", "dog"], test_dir="val")
    d = data.load_dataset(f"imagefolder64:{tmp_path}", config=DataConfig(val_size=0))
    assert d.input_shape == (3, 64, 64)
    assert data.load_dataset(f"imagefolder:{tmp_path}", config=DataConfig(val_size=0)).input_shape == (3, 32, 32)
    monkeypatch.setattr(data.os, "sysconf", lambda k: 4096 if k == "SC_PAGE_SIZE" else 10)   # a 40 kB machine
    with pytest.raises(data.DatasetTooLarge, match=r"imagefolder224:.*8 images x 150,528 bytes.*use a smaller size"):
        data.load_dataset(f"imagefolder224:{tmp_path}", config=DataConfig(val_size=0))
    # the peak counts the float64 copies the mean and std are computed from, not only the uint8 images:
    # 8 images of 3x32x32 are 24.6 kB as uint8 (within a 410 kB machine's half) but 246 kB at the peak
    monkeypatch.setattr(data.os, "sysconf", lambda k: 4096 if k == "SC_PAGE_SIZE" else 100)
    data._CACHE.clear()
    with pytest.raises(data.DatasetTooLarge, match=r"8 images x 3,072 bytes, held twice as uint8 plus 4 training "
                                                   r"images as float64 for their mean and std, need 0\.000246 GB"):
        data.load_dataset(f"imagefolder:{tmp_path}", config=DataConfig(val_size=0))
    data._CACHE.clear()


def test_a_pair_study_reads_its_dataset_and_trains_its_pair():
    from kd_helpers.core.data import data_name
    from kd_helpers.store.presets import PROOF_EPOCHS, family, preset, split_study
    assert data_name("cifar100@wrn_40_2-wrn_16_2") == "cifar100"
    assert split_study("cifar10@resnet56-resnet20")[1].teacher == "resnet56" and family("cifar10@resnet56-resnet20") == "pair"
    p = preset("cifar100@wrn_40_2-wrn_16_2", "paper")   # RepDistiller's protocol
    assert (p.teacher, p.student, p.train.optimizer, p.train.lr, p.train.batch_size, p.train.epochs) == \
        ("wrn_40_2", "wrn_16_2", "sgd", 0.05, 64, 240)
    assert p.train.milestones == (0.625, 0.75, 0.875) and p.train.weight_decay == 5e-4 and p.train.augment
    assert p.loss["dkd"] == {"warmup": 20, "beta": 6.0} and p.loss["kd"]["T"] == 4.0
    assert preset("cifar100@resnet32x4-resnet8x4", "paper").loss["dkd"]["beta"] == 8.0
    assert preset("cifar100@resnet18-mobilenetv2", "paper").train.lr == 0.01
    proof = preset("cifar10@wrn_40_2-wrn_16_2", "paper").train   # the 2-core proof schedule
    assert (proof.epochs, proof.schedule, proof.augment) == (PROOF_EPOCHS, "cosine", False)
    with pytest.raises(ValueError, match="Unknown teacher-student pair 'a-b'.*resnet56-resnet20"):
        preset("cifar10@a-b", "paper")
