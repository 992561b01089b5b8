import pytest
import torch

from kd_helpers.data import DataConfig, DatasetNotFoundError, crop_flip, load_dataset
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
