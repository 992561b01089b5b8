"""Training throughput: the usual reference-study loop vs this project's path, in one run.

(a) usual: a map-style dataset that builds a PIL image per sample and applies torchvision
    transforms (exactly what ``torchvision.datasets.CIFAR10/MNIST.__getitem__`` do), a
    ``DataLoader`` (shuffle, 2 workers), NCHW tensors, and the teacher's forward pass on
    every step;
(b) this project: uint8 tensors in memory sliced per batch, vectorised crop+flip,
    channels-last for CNNs, threads = physical cores, fused Adam, and teacher outputs
    cached once when there is no augmentation (``kd_helpers.core.teacher_cache``; the one-off
    cost is reported);
    timed in fp32 and in the precision ``TrainConfig(precision="auto")`` picks on this
    machine (bf16 autocast on CPUs with AMX/AVX512-BF16).

Prints images/s and the ratio b/a per scenario, the KD / baseline epoch cost ratio, and
teacher-training GFLOP/s as a fraction of a large matmul measured in the same run (fp32,
and bf16 when the machine runs it natively).

    python benchmarks/throughput.py                 # full (needs CIFAR-10 + MNIST under KD_DATA_DIR)
    python benchmarks/throughput.py --update-readme # also rewrite the table in benchmarks/README.md
    python benchmarks/throughput.py --tiny          # seconds; used by the tests
"""
from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms as T

from kd_helpers.core.data import DataConfig, load_dataset
from kd_helpers.core.evaluate import flops
from kd_helpers.core.losses import build_loss, describe_pair
from kd_helpers.core.models import create_model
from kd_helpers.core.teacher_cache import TeacherOutputs
from kd_helpers.core.train import TrainConfig, as_fp32, make_optimizer
from kd_helpers.core.util import autocast_dtype, cpu_model, dtype_name, physical_cores, setup_threads

README = Path(__file__).with_name("README.md")
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


class PerSampleImages(torch.utils.data.Dataset):
    """The torchvision way: one PIL image + transform per ``__getitem__``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform):
        self.x = x.permute(0, 2, 3, 1).squeeze(-1).numpy() if x.shape[1] == 1 else x.permute(0, 2, 3, 1).numpy()
        self.y, self.transform = y.tolist(), transform

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.x[i])), self.y[i]


def usual_loader(data, batch, augment, workers):
    tf = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if augment else []
    tf += [T.ToTensor(), T.Normalize(data.mean, data.std)]
    ds = PerSampleImages(data.x["train"], data.y["train"], T.Compose(tf))
    return DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                      persistent_workers=workers > 0)


def train_step(forward, loss, opt, teacher_out=None, amp=None):
    """One optimisation step, the same for every path and model being timed (``fit``'s step)."""
    def step(x, y, idx):
        with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            t = as_fp32(teacher_out(x, idx)) if teacher_out is not None else None
            terms = loss(as_fp32(forward(x)), t, y, x=x)
        opt.zero_grad(set_to_none=True)
        sum(terms.values()).backward()
        opt.step()
    return step


def timed_steps(step, batches, n_steps, warmup=3) -> float:
    """Images per second over ``n_steps`` steps after ``warmup`` (data loading included)."""
    it = iter(batches)
    for _ in range(warmup):
        step(*next(it))
    seen, t0 = 0, time.perf_counter()
    for _ in range(n_steps):
        x, y, *rest = next(it)
        step(x, y, *rest)
        seen += len(y)
    return seen / (time.perf_counter() - t0)


def cycle(make):
    while True:
        yield from make()


def scenario(data, s_name, t_name, method, augment, batch, n_steps, workers, mode, compile_student=False,
             amp=None):
    torch.manual_seed(0)
    shape, k = data.input_shape, data.num_classes
    student = create_model(s_name, k, in_shape=shape)
    teacher = create_model(t_name, k, in_shape=shape).eval().requires_grad_(False) if t_name else None
    loss = build_loss(method, describe_pair(student, teacher, shape, k))
    params = list(student.parameters()) + list(loss.parameters())
    # the usual loop: torch's default Adam; this project: fit's optimizer (fused kernel)
    opt = torch.optim.Adam(params, lr=1e-3) if mode == "usual" else make_optimizer(params, TrainConfig(lr=1e-3))
    cache_s = 0.0
    if mode == "usual":
        def teacher_out(x, idx):
            with torch.no_grad():
                return teacher(x)
        batches = cycle(lambda: ((x, y, None) for x, y in usual_loader(data, batch, augment, workers)))
    else:
        cl = len(shape) == 3 and shape[1] > 1
        student.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
        if teacher is not None:
            teacher.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
            t0 = time.perf_counter()
            teacher_out = TeacherOutputs(teacher, data, feats=loss.teacher_feats, cached=not augment,
                                         channels_last=cl)
            cache_s = time.perf_counter() - t0
        gen = torch.Generator().manual_seed(0)
        batches = cycle(lambda: data.batches("train", batch, shuffle=True, augment=augment, generator=gen,
                                             channels_last=cl))

    forward = torch.compile(student) if compile_student else student
    step = train_step(forward, loss, opt, teacher_out if teacher is not None else None, amp)
    return timed_steps(step, batches, n_steps), cache_s


def matmul_gflops(n=2048, reps=10, dtype=torch.float32) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9


def teacher_training_gflops(data, t_name, batch, n_steps, amp=None) -> float:
    shape = data.input_shape
    torch.manual_seed(0)
    model = create_model(t_name, data.num_classes, in_shape=shape)
    cl = len(shape) == 3 and shape[1] > 1
    model.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
    loss = build_loss("ce")
    opt = make_optimizer(model.parameters(), TrainConfig(lr=1e-3))
    gen = torch.Generator().manual_seed(0)
    batches = cycle(lambda: data.batches("train", batch, shuffle=True, generator=gen, channels_last=cl))
    ips = timed_steps(train_step(model, loss, opt, amp=amp), batches, n_steps)
    return ips * 3 * flops(model, shape) / 1e9  # backward ~ 2x forward


def run(tiny: bool, data_dir=None, workers: int = 2, compile_check: bool = False) -> dict:
    setup_threads()
    steps = 3 if tiny else 30
    cnn = ("cnn_student", "cnn_teacher")
    if tiny:  # packaged data only: 8x8 digits stand in for CIFAR, mnist5k for MNIST
        cifar = load_dataset("digits", config=DataConfig(limit_train=512))
        mnist = load_dataset("mnist5k", config=DataConfig(limit_train=512))
    else:
        cifar = load_dataset("cifar10", data_dir, DataConfig(val_size=5000, limit_train=10240))
        mnist = load_dataset("mnist", data_dir, DataConfig(val_size=5000, limit_train=10240))
    plan = [  # name, data, student, teacher, method, augment, batch
        ("CIFAR-10 baseline student", cifar, cnn[0], None, "ce", False, 128),
        ("CIFAR-10 KD student, no aug", cifar, cnn[0], cnn[1], "kd", False, 128),
        ("CIFAR-10 KD student, crop+flip", cifar, cnn[0], cnn[1], "kd", True, 128),
        ("MNIST KD student", mnist, "mlp_student", "mlp_teacher", "kd", False, 256),
    ]
    amp = autocast_dtype("auto", torch.device("cpu"))
    rows = []
    for name, data, s, t, method, aug, batch in plan:
        if tiny and aug and data.input_shape[1] < 32:
            aug = False  # crop+flip assumes 32x32 in the usual transform
        a, _ = scenario(data, s, t, method, aug, batch, steps, workers, "usual")
        b, cache_s = scenario(data, s, t, method, aug, batch, steps, workers, "ours")
        row = {"scenario": name, "usual_img_s": a, "ours_img_s": b, "ratio": b / a, "cache_build_s": cache_s}
        if amp is not None:
            row["ours_amp_img_s"], _ = scenario(data, s, t, method, aug, batch, steps, workers, "ours", amp=amp)
            row["ratio_amp"] = row["ours_amp_img_s"] / a
        rows.append(row)
    base = next(r for r in rows if "baseline" in r["scenario"])
    kd = next(r for r in rows if "no aug" in r["scenario"])
    extra = {}
    if compile_check:  # TrainConfig.compile stays off unless this shows a gain
        eager = kd["ours_img_s"]
        compiled, _ = scenario(cifar, cnn[0], cnn[1], "kd", False, 128, steps, workers, "ours", compile_student=True)
        extra["compile_over_eager"] = compiled / eager
    mm = matmul_gflops(512 if tiny else 2048, 2 if tiny else 10)
    tg = teacher_training_gflops(cifar, cnn[1], 128, steps)
    if amp is not None:
        extra["amp"] = dtype_name(amp)
        extra["matmul_amp_gflops"] = matmul_gflops(512 if tiny else 2048, 2 if tiny else 10, amp)
        extra["teacher_train_amp_gflops"] = teacher_training_gflops(cifar, cnn[1], 128, steps, amp)
        extra["kd_over_baseline_epoch_cost_amp"] = base["ours_amp_img_s"] / kd["ours_amp_img_s"]
    return {"rows": rows, "kd_over_baseline_epoch_cost": base["ours_img_s"] / kd["ours_img_s"],
            "matmul_gflops": mm, "teacher_train_gflops": tg, "teacher_fraction_of_matmul": tg / mm,
            "machine": {"cpu": cpu_model(), "physical_cores": physical_cores(),
                        "threads": torch.get_num_threads(), "torch": torch.__version__,
                        "capability": torch.backends.cpu.get_cpu_capability()},
            "tiny": tiny, **extra}


TARGETS = {"CIFAR-10 KD student, no aug": ">= 4x", "CIFAR-10 KD student, crop+flip": ">= 1.5x"}


def markdown(res: dict, command: str) -> str:
    m, amp = res["machine"], res.get("amp")
    lines = [f"_Generated by `{command}`; machine: {m['cpu']}, {m['physical_cores']} physical cores, "
             f"{m['threads']} threads, torch {m['torch']}, CPU capability {m.get('capability', '?')}._", ""]
    head = "| scenario | usual loop (img/s) | this project, fp32 (img/s) | ratio |"
    if amp:
        head += f" this project, {amp} (img/s) | ratio |"
    head += " target | one-off cache (s) |"
    lines += [head, "|---" * (head.count("|") - 1) + "|"]
    for r in res["rows"]:
        cells = f"| {r['scenario']} | {r['usual_img_s']:.0f} | {r['ours_img_s']:.0f} | {r['ratio']:.2f}x |"
        if amp:
            cells += f" {r['ours_amp_img_s']:.0f} | {r['ratio_amp']:.2f}x |"
        lines.append(cells + f" {TARGETS.get(r['scenario'], '')} | {r['cache_build_s']:.1f} |")
    lines += ["", "| measure | value | target |", "|---|---|---|",
              f"| KD epoch (cached teacher) / baseline-student epoch, fp32 | {res['kd_over_baseline_epoch_cost']:.2f}x | <= 1.2x |"]
    if amp:
        lines.append(f"| KD epoch (cached teacher) / baseline-student epoch, {amp} | "
                     f"{res['kd_over_baseline_epoch_cost_amp']:.2f}x | <= 1.2x |")
    lines += [f"| teacher training GFLOP/s, fp32 | {res['teacher_train_gflops']:.1f} | |",
              f"| large fp32 matmul GFLOP/s | {res['matmul_gflops']:.1f} | |",
              f"| teacher training / matmul, fp32 | {100 * res['teacher_fraction_of_matmul']:.0f}% | >= 50% |"]
    if amp:
        lines += [f"| teacher training GFLOP/s, {amp} | {res['teacher_train_amp_gflops']:.1f} | |",
                  f"| large {amp} matmul GFLOP/s | {res['matmul_amp_gflops']:.1f} | |",
                  f"| teacher training / matmul, {amp} | "
                  f"{100 * res['teacher_train_amp_gflops'] / res['matmul_amp_gflops']:.0f}% | |"]
    if "compile_over_eager" in res:
        lines.append(f"| torch.compile / eager, CIFAR-10 KD student | {res['compile_over_eager']:.2f}x | on only if > 1 |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="seconds-long run on packaged data (tests)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the usual loop")
    ap.add_argument("--json", default=None, help="also write the raw results here")
    ap.add_argument("--update-readme", action="store_true")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile on the KD student")
    args = ap.parse_args(argv)
    res = run(args.tiny, args.data_dir, args.workers, args.compile)
    cmd = "python benchmarks/throughput.py" + (" --tiny" if args.tiny else "") + (" --compile" if args.compile else "")
    md = markdown(res, cmd)
    print(md)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    if args.update_readme:
        text = README.read_text()
        README.write_text(re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: f"{START}\n{md}\n{END}",
                                 text, flags=re.S))
    return res


if __name__ == "__main__":
    main()
