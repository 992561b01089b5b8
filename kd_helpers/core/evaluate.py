"""Model measurements recorded with every run: accuracy, errors, size, FLOPs, CPU latency."""
from __future__ import annotations

import copy
import io
import logging
import os

import numpy as np
import torch
from torch import nn

logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # CUDA_HOME notice on CPU machines
from torch.utils import benchmark  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from .models import count_params


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return (logits.argmax(1) == y).float().mean().item() if len(y) else float("nan")


def error_count(logits: torch.Tensor, y: torch.Tensor) -> int:
    return int((logits.argmax(1) != y).sum())


def flops(model: nn.Module, in_shape, batch: int = 1) -> int:
    """Forward FLOPs for ``batch`` samples (a multiply-add counts as 2), via torch's counter."""
    model = copy.deepcopy(model).cpu().eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(batch, *in_shape))
    return int(counter.get_total_flops())


def latency_ms(model: nn.Module, in_shape, batch: int = 1, repeats: int = 20, number: int = 10,
               threads: int | None = None) -> tuple[float, float]:
    """CPU latency of one forward pass: mean and std (ms) over ``repeats`` timed blocks of
    ``number`` calls each, after a warm-up; ``torch.utils.benchmark`` handles threads and timers."""
    model = copy.deepcopy(model).cpu().eval()
    x = torch.randn(batch, *in_shape)
    timer = benchmark.Timer("with torch.inference_mode(): model(x)", globals={"model": model, "x": x, "torch": torch},
                            num_threads=threads or torch.get_num_threads())
    timer.timeit(max(number // 2, 1))  # warm-up: allocator, oneDNN primitive caches
    times = [timer.timeit(number).mean * 1e3 for _ in range(repeats)]
    return float(np.mean(times)), float(np.std(times))


def size_on_disk(model: nn.Module) -> int:
    """Bytes of the saved state_dict (what a user would ship)."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def describe(model: nn.Module, in_shape, latency_repeats: int | None = None) -> dict:
    """Size, compute and speed of a model on the CPU. Latency takes ``latency_repeats`` timed
    blocks (default ``$KD_LATENCY_REPEATS``, else 20; the tests use fewer), recorded with it."""
    repeats = latency_repeats or int(os.environ.get("KD_LATENCY_REPEATS", 20))
    lat, lat_sd = latency_ms(model, in_shape, repeats=repeats)
    blat, blat_sd = latency_ms(model, in_shape, batch=64, repeats=max(repeats // 4, 2), number=3)
    return {"params": count_params(model), "params_nonzero": count_params(model, nonzero=True),
            "flops": flops(model, in_shape), "latency_ms": lat, "latency_std_ms": lat_sd,
            "latency_b64_ms": blat, "latency_b64_std_ms": blat_sd, "latency_repeats": repeats,
            "size_bytes": size_on_disk(model)}


def compare_latency(models: dict[str, nn.Module], in_shape, batch: int = 1, rounds: int = 5,
                    number: int = 20) -> dict[str, tuple[float, float]]:
    """Latency (mean, std in ms) of several models measured in interleaved rounds, so that
    load changes on the machine hit all of them alike (ratios are what to read)."""
    times = {k: [] for k in models}
    for _ in range(rounds):
        for k, m in models.items():
            mean, _ = latency_ms(m, in_shape, batch=batch, repeats=3, number=number)
            times[k].append(mean)
    return {k: (float(np.mean(v)), float(np.std(v))) for k, v in times.items()}
