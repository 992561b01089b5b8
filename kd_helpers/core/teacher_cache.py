"""Teacher outputs for a training batch: from a cache when the inputs are deterministic.

Without augmentation the teacher sees the same images every epoch, so its outputs are
computed once (fp16, next to the teacher checkpoint) and shared by every method and seed
distilling from it. The cache key hashes the teacher's weights, the dataset, its split and
normalisation and whether features are stored, so any change invalidates it. With
augmentation the teacher runs on the very batch the student sees (a stale cached view
would mismatch teacher and student inputs; Beyer et al. 2022).
"""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from .data import Dataset
from .lock import RunLock
from .util import atomic_torch_save, atomic_write_text, sha256


def teacher_key(teacher: nn.Module, data: Dataset, feats: bool) -> str:
    h = hashlib.sha256()
    for k, v in sorted(teacher.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    h.update(repr((data.name, data.source, data.mean, data.std, tuple(data.x["train"].shape), feats)).encode())
    h.update(data.y["train"].cpu().numpy().tobytes())
    h.update(data.x["train"][:: max(len(data.y["train"]) // 64, 1)].cpu().numpy().tobytes())  # sampled pixels
    return h.hexdigest()[:16]


class TeacherOutputs:
    """Callable ``(x, idx) -> (logits, feats)`` for training batches of ``data``'s train split."""

    def __init__(self, teacher: nn.Module, data: Dataset, *, feats: bool, cached: bool,
                 cache_dir: str | os.PathLike | None = None, batch_size: int = 1024,
                 channels_last: bool = False):
        self.teacher, self.feats = teacher, feats
        self.cache: tuple[torch.Tensor, list[torch.Tensor]] | None = None
        self.path: Path | None = None
        if cached:
            key = teacher_key(teacher, data, feats)
            self.path = Path(cache_dir) / f"teacher_outputs_{key}.pt" if cache_dir else None
            if self.path is None:
                self.cache = self._compute(data, batch_size, channels_last)
                return
            with RunLock(self.path.with_suffix(".lock")):   # students training at once build it once
                if self.path.exists():
                    self.cache = self._read(self.path)
                if self.cache is None:
                    self.cache = self._compute(data, batch_size, channels_last)
                    atomic_torch_save(self.cache, self.path)
                    atomic_write_text(self._sum_path(self.path), sha256(self.path))  # written last

    @staticmethod
    def _sum_path(path: Path) -> Path:
        return path.with_suffix(".sha256")

    @classmethod
    def _read(cls, path: Path):
        """The cached outputs, or None (with a warning) if the file is damaged or was never
        completed: they are recomputed. A sha256 written after the cache guards its bytes."""
        try:
            if cls._sum_path(path).read_text().strip() != sha256(path):
                raise ValueError("contents do not match the recorded sha256")
            return torch.load(path, weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable cache is rebuilt the same way
            warnings.warn(f"Teacher-output cache {path} is damaged ({type(e).__name__}: {e}); recomputing it.",
                          stacklevel=3)
            return None

    @torch.inference_mode()
    def _compute(self, data, batch_size, channels_last):
        device = next(self.teacher.parameters()).device
        logits, feats = [], []
        for x, _, _ in data.batches("train", batch_size, device=device, channels_last=channels_last):
            z, f = self.teacher(x)
            logits.append(z.half().cpu())
            if self.feats:
                feats.append([t.half().contiguous().cpu() for t in f])
        return torch.cat(logits), [torch.cat(ts) for ts in zip(*feats)] if self.feats else []

    @property
    def is_cached(self) -> bool:
        return self.cache is not None

    def __call__(self, x: torch.Tensor, idx: torch.Tensor):
        if self.cache is None:
            with torch.no_grad():
                return self.teacher(x)
        logits, feats = self.cache
        dev = x.device
        return logits[idx].to(dev).float(), [f[idx].to(dev).float() for f in feats]
