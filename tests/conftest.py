import os
from pathlib import Path

import pytest
import torch

from kd_helpers.core.data import Dataset
from kd_helpers.core.util import physical_cores

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
# latency is measured after every run; 3 timed blocks instead of 20 keep the smoke runs short
# (inherited by papermill kernels and worker processes; each run records the value it used)
os.environ.setdefault("KD_LATENCY_REPEATS", "3")
# pytest-xdist workers share the cores: two workers with two threads each on two cores leave
# OpenMP threads spinning for a core (a MobileNetV2 pair's step test: 28 CPU-s with 2 threads each, 1.4 with 1)
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("KD_THREADS", str(max(1, physical_cores() // _WORKERS)))
    torch.set_num_threads(int(os.environ["KD_THREADS"]))


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


@pytest.fixture
def float64():
    """References in float64 for tight tolerances; restored after each test (xdist shares workers)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
