"""The study's protocol per dataset family and profile (one table, read by every notebook).

``paper`` follows the reference protocol (MNIST: Adam 1e-3, batch 256, 20 epochs; CIFAR-10:
Adam 1e-3, batch 128, 20 epochs, no augmentation) with one deviation: the learning rate decays
on a cosine schedule instead of staying constant. The protocol ablation (``kd_helpers.ablation``,
notebooks/01_teacher) chose it on validation accuracy: at a constant 1e-3 the MLP teacher was no
better than its student. Every run keeps the weights of its best-validation epoch.
``quick`` is the offline default main job (minutes on 2 CPU cores), ``smoke`` is for tests
(tiny data, 1 epoch).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from .data import DataConfig
from .losses import LOSSES
from .train import TrainConfig

PROFILES = ("smoke", "quick", "paper")


@dataclass(frozen=True)
class Preset:
    models: dict[str, str]      # role -> architecture: teacher, student, fitnet, student_mod
    train: TrainConfig
    teacher_train: TrainConfig
    data: DataConfig
    # the study's chosen hyper-parameters per method for this family (None values fall back here)
    loss: dict[str, dict] = field(default_factory=dict)
    prune_epochs: int = 5          # fine-tuning after pruning (20_pruning)

    @property
    def teacher(self) -> str:
        return self.models["teacher"]

    @property
    def student(self) -> str:
        return self.models["student"]


def family(dataset: str) -> str:
    return "mlp" if dataset in ("mnist", "mnist5k", "fashion_mnist", "digits") else "cnn"


# The study's hyper-parameters where they differ from the loss class's (paper) defaults.
# DKD ramps its weight over 2 epochs: the paper's 20 of 240 would never finish in 20.
_LOSS = {
    "mlp": {"kd": {"T": 20.0, "alpha": 0.1}, "fitnets": {"T": 20.0, "alpha": 0.1},
            "feature_kd": {"T": 20.0, "alpha": 0.1, "beta": 0.45}, "dkd": {"warmup": 2}},
    "cnn": {"kd": {"T": 4.0, "alpha": 0.1}, "fitnets": {"T": 4.0, "alpha": 0.1},
            "feature_kd": {"T": 4.0, "alpha": 0.1, "beta": 0.45}, "dkd": {"warmup": 2}},
}


@dataclass(frozen=True)
class Variant:
    """A named run of the study: which method trains which network, with which hyper-parameters
    beyond the family's values. Any method name is also a variant (the student, no extras)."""
    method: str
    role: str = "student"       # a key of Preset.models
    loss: dict = field(default_factory=dict)


VARIANTS = {
    "teacher": Variant("ce", "teacher"),
    "baseline": Variant("ce"),
    "baseline_mod": Variant("ce", "student_mod"),
    "fitnet_baseline": Variant("ce", "fitnet"),
    "fitnets": Variant("fitnets", "fitnet"),
    "fitnets_1stage": Variant("fitnets", "fitnet", {"stage1_frac": 0.0, "beta": 1.0}),
    # the reference study's RKD row: distance term only, weight 100 (the paper's is 25 + angle 50)
    "rkd_ref": Variant("rkd", "student", {"w_d": 100.0, "w_a": 0.0}),
}


def variant(name: str) -> Variant:
    if name in VARIANTS:
        return VARIANTS[name]
    if name in LOSSES:
        return Variant(name)
    raise ValueError(f"Unknown run '{name}': neither a named run of the study ({', '.join(VARIANTS)}) nor a "
                     f"method ({', '.join(sorted(LOSSES))}).")


def preset(dataset: str, profile: str = "quick") -> Preset:
    if profile not in PROFILES:
        raise ValueError(f"Unknown profile '{profile}'. Available: {', '.join(PROFILES)}")
    fam = family(dataset)
    if fam == "mlp":
        train = TrainConfig(epochs=20, batch_size=256, optimizer="adam", lr=1e-3, schedule="cosine", augment=False)
        names = ("mlp_teacher", "mlp_student", "mlp_fitnet", "mlp_student_mod")
        data = DataConfig(val_size=0.1)
    else:
        # evaluation in batches of 128: at 1024 a CNN's activations fall out of cache and the
        # per-epoch val/test passes run 1.8x (teacher) to 2.2x (student) slower on 2 CPU cores
        train = TrainConfig(epochs=20, batch_size=128, optimizer="adam", lr=1e-3, schedule="cosine", augment=False,
                            eval_batch_size=128)
        names = ("cnn_teacher", "cnn_student", "cnn_fitnet", "cnn_student_nobn")
        data = DataConfig(val_size=5000 if dataset.startswith("cifar") else 0.1)
    teacher_train = train
    if profile == "quick":
        # mnist5k: the whole subset; CIFAR: a 10k-image slice so every notebook fits in minutes
        epochs = 10 if fam == "mlp" else 3
        train = replace(train, epochs=epochs)
        teacher_train = replace(teacher_train, epochs=epochs)
        if fam == "cnn":
            data = replace(data, val_size=1000, limit_train=8000, limit_test=2000)
    elif profile == "smoke":
        train = replace(train, epochs=1, batch_size=64)
        teacher_train = train
        data = replace(data, val_size=64, limit_train=256, limit_test=128)
    models = dict(zip(("teacher", "student", "fitnet", "student_mod"), names))
    prune_epochs = {"smoke": 1, "quick": 3, "paper": 5}[profile]
    return Preset(models, train=train, teacher_train=teacher_train, data=data, loss=_LOSS[fam],
                  prune_epochs=prune_epochs)
