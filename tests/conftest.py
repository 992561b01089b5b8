import os
from pathlib import Path

import pytest
import torch

from kd_helpers.data import Dataset

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def shared_data_dir() -> str | None:
    """Where real MNIST/CIFAR-10 files are: $KD_DATA_DIR, else the workplace's shared folder."""
    for d in (os.environ.get("KD_DATA_DIR"), SHARED):
        if d and (Path(d) / "cifar-10-batches-py").exists():
            return str(d)
    return None


needs_cifar = pytest.mark.skipif(shared_data_dir() is None, reason="CIFAR-10 files not found (set KD_DATA_DIR)")


def tiny_dataset(n=64, shape=(1, 8, 8), classes=4, seed=0, augment=False) -> Dataset:
    """Generated images whose class is visible in the pixels (learnable in a few steps)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randint(0, 60, (n, *shape), generator=g, dtype=torch.uint8)
    x[torch.arange(n), 0, 0, :] = 0
    x[torch.arange(n), 0, 0, y] = 255  # a bright pixel at the class's column
    xs = {"train": x, "val": x[: n // 4], "test": x[: n // 2]}
    ys = {"train": y, "val": y[: n // 4], "test": y[: n // 2]}
    return Dataset("tiny", xs, ys, mean=(0.2,) * shape[0], std=(0.3,) * shape[0],
                   classes=[str(i) for i in range(classes)], augment=augment)


@pytest.fixture(autouse=True)
def _quiet(monkeypatch, tmp_path):
    monkeypatch.setenv("KD_FIGURES_DIR", str(tmp_path / "figures"))
    torch.manual_seed(0)
