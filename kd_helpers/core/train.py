"""The one training loop: teacher, baseline student and every KD method go through ``fit``."""
from __future__ import annotations

import hashlib
import io
import math
import os
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm  # plain text bars: readable in executed notebooks and logs

from .data import Dataset
from .evaluate import accuracy
from .losses import DistillLoss
from .losses.base import full
from .teacher_cache import TeacherOutputs
from .util import atomic_write_bytes, atomic_write_text, autocast_dtype, device_default, dtype_name, setup_threads, sha256


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 256
    optimizer: str = "adam"       # adam | adamw | sgd
    lr: float = 1e-3
    momentum: float = 0.9         # sgd only
    nesterov: bool = True         # sgd only (RepDistiller's CIFAR-100 protocol: plain momentum)
    weight_decay: float = 0.0
    schedule: str = "constant"    # constant | cosine | step (x0.1 at each of ``milestones``)
    milestones: tuple[float, ...] = (0.5, 0.75)   # step schedule, as fractions of the epochs
    augment: bool | None = None   # None: the dataset's default
    seed: int = 0
    cache_teacher: bool = True    # reuse teacher outputs when inputs are deterministic
    channels_last: bool = True    # CNNs on CPU run faster in NHWC
    # mixed precision for training steps and the per-epoch val/test curves (a run's final
    # metrics are always fp32): auto | fp32 | bf16 | fp16; auto = fp16 on CUDA, bf16 on CPUs
    # with AMX/AVX512-BF16, else fp32 (util.autocast_dtype)
    precision: str = "auto"
    fused_optimizer: bool = True  # torch's fused Adam/AdamW/SGD kernels (CPU and CUDA)
    compile: bool = False         # torch.compile: off unless measured to help (see benchmarks/)
    eval_batch_size: int = 1024
    # the per-epoch test accuracy (a curve only: nothing is chosen on it). A tuning trial turns it
    # off and never reads the test set; reported runs keep it (about 6% of a run's time in the
    # published studies, benchmarks/README.md) for the last epoch's accuracy and the curves
    test_curve: bool = True


_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer not in _OPTIMIZERS:
        raise ValueError(f"Unknown optimizer '{cfg.optimizer}'. Available: {', '.join(_OPTIMIZERS)}")
    kw = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if cfg.optimizer == "sgd":
        kw.update(momentum=cfg.momentum, nesterov=cfg.nesterov)
    # the fused kernel makes one pass over each parameter instead of ~10 elementwise ops:
    # same update rule, and on the MLPs (2.4M params, cheap matmuls) it is a large share of a step
    return _OPTIMIZERS[cfg.optimizer](params, fused=cfg.fused_optimizer, **kw)


def lr_factor(schedule: str, epoch: int, epochs: int, milestones=(0.5, 0.75)) -> float:
    """Multiplier of the base learning rate during ``epoch`` (0-based)."""
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * epoch / epochs))
    if schedule == "step":
        return 0.1 ** sum(epoch >= round(m * epochs) for m in milestones)
    raise ValueError(f"Unknown schedule '{schedule}'. Use constant, cosine or step.")


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def as_fp32(out):
    """``(logits, feats)`` out of autocast: fp16/bf16 become float32, nothing else changes."""
    logits, feats = out
    return full(logits), [full(f) for f in feats]


class NonFiniteLoss(FloatingPointError):
    pass


def _checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def save_checkpoint(state: dict, path) -> None:
    """An epoch checkpoint with its sha256 beside it. The checksum file is written first and
    lists the new checkpoint's sha256 and the previous one's, so a kill between the two writes
    leaves a pair that still matches (the old checkpoint, or the new one); a flipped bit matches
    neither."""
    path = Path(path)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    sums = _checksum_path(path)
    previous = sums.read_text().split()[:1] if sums.exists() and path.exists() else []
    atomic_write_text(sums, "\n".join([hashlib.sha256(data).hexdigest(), *previous]) + "\n")
    atomic_write_bytes(path, data)


def read_checkpoint(path, device="cpu") -> dict | None:
    """An epoch checkpoint, or None if there is none. A damaged one (a flipped bit, a kill or a
    full disk mid-write on a file system without atomic rename, a bad copy: its bytes match no
    sha256 recorded when it was written) is deleted with a warning: the run starts over instead
    of resuming from corrupted weights or crashing on every rerun."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        recorded = _checksum_path(path).read_text().split() if _checksum_path(path).exists() else []
        if sha256(path) not in recorded:
            raise ValueError("its bytes do not match the sha256 recorded when it was written"
                             if recorded else "no sha256 was recorded with it")
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file means the same thing here
        warnings.warn(f"Checkpoint {path} is damaged ({type(e).__name__}: {str(e)[:80]}); deleted, the run starts "
                      f"over from epoch 1.", stacklevel=2)
        remove_checkpoint(path)
        return None


def remove_checkpoint(path) -> None:
    path = Path(path)
    path.unlink(missing_ok=True)
    _checksum_path(path).unlink(missing_ok=True)


@torch.inference_mode()
def predict(model: nn.Module, data: Dataset, split: str, batch_size: int = 1024,
            extra: DistillLoss | None = None, device=None, channels_last: bool = False,
            autocast: torch.dtype | None = None):
    """Logits of ``model`` on a split (float32, CPU), and of any extra classifiers of ``extra``.

    ``autocast``: run in that low precision (the per-epoch curves of ``fit``); final metrics
    are computed without it."""
    device = device or next(model.parameters()).device
    was = model.training, extra.training if extra is not None else None
    model.eval()
    if extra is not None:
        extra.eval()
    outs, extras = [], defaultdict(list)
    for x, _, _ in data.batches(split, batch_size, device=device, channels_last=channels_last):
        with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            out = model(x)
            extra_out = extra.extra_logits(x, out) if extra is not None else {}
        outs.append(out[0].float().cpu())
        for k, z in extra_out.items():
            extras[k].append(z.float().cpu())
    model.train(was[0])
    if extra is not None:
        extra.train(was[1])
    return torch.cat(outs), {k: torch.cat(v) for k, v in extras.items()}


def fit(model: nn.Module, loss_fn: DistillLoss, data: Dataset, cfg: TrainConfig, *,
        teacher: nn.Module | None = None, checkpoint: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None, progress: bool = True, desc: str = "",
        meta: dict | None = None, log=None, on_epoch: Callable[[dict], bool] | None = None) -> list[dict]:
    """Train ``model`` with ``loss_fn`` and return the per-epoch history.

    Every epoch ends with an atomic checkpoint; if ``checkpoint`` exists the run resumes from
    it. The model ends at the weights of its best-validation epoch (the earliest, if tied; the
    last epoch when there is no validation split): ``selected`` marks that row of the history.
    Each epoch's randomness (order, augmentation, dropout) derives from ``(seed, epoch)``,
    so a resumed run gives the same result as an uninterrupted one. ``meta`` (the run's config)
    is saved with every checkpoint so a caller can refuse to resume under another config.
    ``log(line)`` receives one line per epoch (default: printed when ``progress``).
    ``on_epoch(row)`` sees each epoch's history row after its checkpoint is written; returning
    True stops training there (a tuning trial's pruner), the model still ends at its best epoch.
    """
    setup_threads()
    device = device_default()
    if device.type == "cuda":
        data = data.to(device)  # no host-to-device copy per batch
    channels_last = cfg.channels_last and len(data.input_shape) == 3 and data.input_shape[1] > 1
    memfmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device, memory_format=memfmt)
    loss_fn.to(device)
    if teacher is not None:
        teacher.to(device, memory_format=memfmt).eval().requires_grad_(False)
    params = [p for p in list(model.parameters()) + list(loss_fn.parameters()) if p.requires_grad]
    opt = make_optimizer(params, cfg)
    amp_dtype = autocast_dtype(cfg.precision, device)
    # fp16 needs loss scaling; bf16 has fp32's exponent range and does not
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    augment = data.augment if cfg.augment is None else cfg.augment
    forward = torch.compile(model) if cfg.compile else model

    history, start, best = [], 0, None
    ckpt = Path(checkpoint) if checkpoint else None
    state = read_checkpoint(ckpt, device) if ckpt is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        loss_fn.load_state_dict(state["loss"])
        opt.load_state_dict(state["optimizer"])
        history, start, best = state["history"], state["epoch"] + 1, state.get("best")
        note = f"{desc} resuming after epoch {start} from {ckpt.name}"
        log(note) if log is not None else tqdm.write(note) if progress else None

    teacher_out = None
    if loss_fn.requires_teacher:
        if teacher is None:
            raise ValueError(f"Method '{loss_fn.name}' needs a teacher; pass teacher=...")
        teacher_out = TeacherOutputs(teacher, data, feats=loss_fn.teacher_feats,
                                     cached=cfg.cache_teacher and not augment, cache_dir=cache_dir,
                                     batch_size=cfg.eval_batch_size, channels_last=channels_last)

    has_val = len(data.y["val"]) > 0
    for epoch in range(start, cfg.epochs):
        t0, c0 = time.perf_counter(), time.process_time()
        seed_everything(cfg.seed * 100_003 + epoch)  # dropout etc. depend on (seed, epoch) only
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * lr_factor(cfg.schedule, epoch, cfg.epochs, cfg.milestones)
        loss_fn.start_epoch(epoch, cfg.epochs)
        model.train()
        loss_fn.train()
        sums, correct, seen = defaultdict(float), 0, 0
        batches = data.batches("train", cfg.batch_size, shuffle=True, augment=augment, generator=gen,
                               device=device, channels_last=channels_last)
        n_batches = math.ceil(len(data.y["train"]) / cfg.batch_size)
        bar = tqdm(batches, total=n_batches, disable=not progress or os.environ.get("KD_PROGRESS") == "0", leave=False,
                   desc=f"{desc} epoch {epoch + 1}/{cfg.epochs}".strip())
        for x, y, idx in bar:
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                # a live teacher (augmentation) runs in the training precision too; cached
                # outputs were computed in fp32. Losses get fp32 inputs (softmax at high T is
                # not safe in 16 bits); matmuls inside them (connectors, peers, exit heads)
                # still run in low precision.
                t = as_fp32(teacher_out(x, idx)) if teacher_out is not None else None
                s = as_fp32(forward(x))
                terms = loss_fn(s, t, y, x=x, idx=idx)
                loss = sum(terms.values())
            if not torch.isfinite(loss):
                raise NonFiniteLoss(
                    f"{desc or loss_fn.name}: loss became {loss.item()} at epoch {epoch + 1} "
                    f"(terms: { {k: float(v.detach() if torch.is_tensor(v) else v) for k, v in terms.items()} }). Lower the learning rate or the "
                    f"loss weights; finished epochs are kept in {ckpt} and the run resumes from there.")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            n = len(y)
            for k, v in terms.items():
                sums[k] += float(v.detach() if torch.is_tensor(v) else v) * n
            sums["loss"] += loss.item() * n
            correct += (s[0].argmax(1) == y).sum().item()
            seen += n
        row = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"], "precision": dtype_name(amp_dtype),
               **getattr(loss_fn, "epoch_info", dict)(),
               **{f"train_{k}": v / seen for k, v in sums.items()}, "train_acc": correct / seen}
        t_eval = time.perf_counter()
        for split in ("val", "test") if cfg.test_curve else ("val",):
            logits, extras = predict(model, data, split, cfg.eval_batch_size, loss_fn, device, channels_last,
                                     autocast=amp_dtype)
            y_split = data.y[split].cpu()  # predict returns CPU logits; data may live on the GPU
            row[f"{split}_acc"] = accuracy(logits, y_split)
            for k, z in extras.items():
                row[f"{split}_acc_{k}"] = accuracy(z, y_split)
        row["eval_s"] = time.perf_counter() - t_eval   # the per-epoch curves' share of time_s
        row["time_s"] = time.perf_counter() - t0
        row["cpu_s"] = time.process_time() - c0
        history.append(row)
        if has_val and (best is None or row["val_acc"] > best["val_acc"]):
            # model selection on validation only: the earliest epoch with the best validation accuracy
            best = {"epoch": row["epoch"], "val_acc": row["val_acc"], "model": _cpu_state(model),
                    "loss": _cpu_state(loss_fn)}
        line = (f"{desc} epoch {epoch + 1}: loss {row['train_loss']:.4f} "
                f"train {row['train_acc']:.4f} val {row['val_acc']:.4f} ({row['time_s']:.1f}s)")
        if log is not None:
            log(line)
        elif progress:
            tqdm.write(line)
        if ckpt is not None:
            save_checkpoint({"model": model.state_dict(), "loss": loss_fn.state_dict(),
                             "optimizer": opt.state_dict(), "history": history, "epoch": epoch,
                             "meta": meta, "best": best}, ckpt)
        if on_epoch is not None and on_epoch(row):
            break
    if best is not None and best["epoch"] != history[-1]["epoch"]:
        model.load_state_dict(best["model"])
        loss_fn.load_state_dict(best["loss"])
    for row in history:
        row["selected"] = best is not None and row["epoch"] == best["epoch"] or best is None and row is history[-1]
    return history


def _cpu_state(module: nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
