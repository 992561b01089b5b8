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

import re
from dataclasses import dataclass, field, replace

from ..core.data import DataConfig
from ..core.losses import LOSSES
from ..core.train import TrainConfig

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


@dataclass(frozen=True)
class TeacherStudent:
    """A teacher -> student pair of the other reference studies (``losses.Pair`` is what a loss
    knows of two built networks; this is which two networks and the reference values for them). A study of a pair is named
    ``<dataset>@<teacher>-<student>`` wherever a dataset name goes (notebooks, the runner, the
    results store), e.g. ``cifar100@wrn_40_2-wrn_16_2``."""
    teacher: str
    student: str
    source: str
    loss: dict = field(default_factory=dict)   # the reference's per-pair values, per method


_RD = "RepDistiller/mdistiller CIFAR-100 benchmark (Tian et al. 2020; Zhao et al. 2022, DKD)"
_SRD = "SRD (Yang et al. 2021) / DIST (Huang et al. 2022) CIFAR-100 tables"
PAIRS = {
    "resnet32x4-resnet8x4": TeacherStudent("resnet32x4", "resnet8x4", _RD, {"dkd": {"beta": 8.0}}),
    "resnet56-resnet20": TeacherStudent("resnet56", "resnet20", _RD, {"dkd": {"beta": 8.0}}),
    "wrn_40_2-wrn_16_2": TeacherStudent("wrn_40_2", "wrn_16_2", _RD, {"dkd": {"beta": 6.0}}),
    "vgg13-vgg8": TeacherStudent("vgg13", "vgg8", _RD, {"dkd": {"beta": 8.0}}),
    "wrn_40_4-wrn_16_4": TeacherStudent("wrn_40_4", "wrn_16_4", _SRD, {"dkd": {"beta": 6.0}}),
    "wrn_40_2-wrn_40_1": TeacherStudent("wrn_40_2", "wrn_40_1", _SRD, {"dkd": {"beta": 6.0}}),
    "wrn_40_4-wrn_16_2": TeacherStudent("wrn_40_4", "wrn_16_2", _SRD, {"dkd": {"beta": 6.0}}),
    "wrn_40_4-mobilenetv2": TeacherStudent("wrn_40_4", "mobilenetv2", _SRD),
    "resnet18-mobilenetv2": TeacherStudent("resnet18", "mobilenetv2", _SRD),
    "resnet50-resnet18": TeacherStudent("resnet50", "resnet18", "ImageFolder (ImageNet-style) study: AT, BYOT, DML, FitNets"),
    "resnet34-mobilenetv2": TeacherStudent("resnet34", "mobilenetv2",
                                 "CIFAR-10 / Tiny-ImageNet distill-then-prune study (ResNet-34 -> compact student)"),
}


# Five epochs keep a pair (teacher + baseline, KD, DKD, DIST on full CIFAR-10) near the hour on
# two cores the proof may take; each pair's measured cost and images/s per network are in its
# generated findings (README results, `Compute (...)` and `Training throughput:`).
PROOF_EPOCHS = 5


def study_parts(dataset: str) -> tuple[str, str | None]:
    """The one parser of a study's name: ``cifar100@wrn_40_2-wrn_16_2`` -> (``cifar100``,
    ``wrn_40_2-wrn_16_2``); a plain dataset (an image tree's path may hold an "@") -> (it, None)."""
    data, sep, pair = dataset.rpartition("@")
    if not sep or dataset.startswith("imagefolder") and pair not in PAIRS:
        return dataset, None
    return data, pair


def split_study(dataset: str) -> tuple[str, TeacherStudent | None]:
    """``cifar100@wrn_40_2-wrn_16_2`` -> (``cifar100``, its TeacherStudent); a plain dataset -> (it, None)."""
    data, pair = study_parts(dataset)
    if pair is None:
        return dataset, None
    if pair not in PAIRS:
        raise ValueError(f"Unknown teacher-student pair '{pair}' in '{dataset}'. Pairs: {', '.join(PAIRS)}")
    return data, PAIRS[pair]


@dataclass(frozen=True)
class DataEntry:
    """What the study needs to know about a dataset beyond how to load it (``data.DATASETS``):
    the network family that studies it and the validation split the paper profile holds out of
    the training set (a count, or a share)."""
    family: str
    val_size: float | int


# One entry per dataset of data.DATASET_NAMES (tests/test_config.py checks it); an
# imagefolder[<size>]:<path> tree is a CNN study with a 10% validation split.
STUDY_DATA: dict[str, DataEntry] = {
    "mnist": DataEntry("mlp", 0.1), "mnist5k": DataEntry("mlp", 0.1), "digits": DataEntry("mlp", 0.1),
    "fashion_mnist": DataEntry("mlp", 0.1),
    "cifar10": DataEntry("cnn", 5000), "cifar100": DataEntry("cnn", 5000), "tinyimagenet": DataEntry("cnn", 0.1),
}
IMAGEFOLDER = DataEntry("cnn", 0.1)


def data_entry(data: str) -> DataEntry:
    """``STUDY_DATA``'s entry of a dataset name (without a pair)."""
    if data in STUDY_DATA:
        return STUDY_DATA[data]
    if re.fullmatch(r"imagefolder\d*:.+", data):
        return IMAGEFOLDER
    raise ValueError(f"Unknown dataset '{data}'. Available: {', '.join(STUDY_DATA)}, imagefolder:<path> (32x32) "
                     f"or imagefolder<size>:<path>; a new dataset needs an entry in kd_helpers/store/presets.py STUDY_DATA.")


def family(dataset: str) -> str:
    """mlp / cnn (the main study's two network families) or pair (another reference study's)."""
    data, pair = split_study(dataset)
    return "pair" if pair else data_entry(data).family


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
    kind: str = "study"         # results.KINDS: what the run is for


# the tuned study's teacher: the study's teacher protocol (not tuned) trained by the training code
# of the tuned table, which must come from one fingerprint (the as-published teachers predate it)
TUNED_TEACHER = "tuned_teacher"

VARIANTS = {
    "teacher": Variant("ce", "teacher"),
    TUNED_TEACHER: Variant("ce", "teacher", kind="tuned"),
    "baseline": Variant("ce"),
    "baseline_mod": Variant("ce", "student_mod"),
    "fitnet_baseline": Variant("ce", "fitnet"),
    "fitnets": Variant("fitnets", "fitnet"),
    # the seed study's one-stage FitNets: its hint weight -B 2 on MSE is beta = 4 on L_HT = MSE / 2
    "fitnets_1stage": Variant("fitnets", "fitnet", {"stage1_frac": 0.0, "beta": 4.0}),
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


def _pair_preset(data: str, pair: TeacherStudent, profile: str) -> Preset:
    """The residual pairs' protocols. ``paper``: RepDistiller's (SGD momentum 0.9, lr 0.05, 0.01
    for a MobileNetV2 student, weight decay 5e-4, batch 64, 240 epochs, lr x0.1 at 150/180/210,
    crop + flip, T = 4, DKD's warm-up 20 epochs), for a GPU; on CIFAR-10 the proof schedule of
    this 2-core machine instead: the same optimiser, ``PROOF_EPOCHS`` epochs, cosine decay, no
    augmentation (the teacher's outputs are cached). DKD's warm-up keeps the paper's share of the
    epochs (20/240)."""
    lr = 0.01 if pair.student.startswith("mobilenet") else 0.05
    sgd = dict(optimizer="sgd", lr=lr, momentum=0.9, nesterov=False, weight_decay=5e-4, batch_size=64,
               eval_batch_size=256)
    if profile == "paper" and data == "cifar10":
        train = TrainConfig(epochs=PROOF_EPOCHS, schedule="cosine", augment=False, **sgd)
    elif profile == "paper":
        train = TrainConfig(epochs=240, schedule="step", milestones=(0.625, 0.75, 0.875), augment=True, **sgd)
    else:
        train = TrainConfig(epochs=3 if profile == "quick" else 1, schedule="cosine", augment=False,
                            **{**sgd, "batch_size": 64})
    data_cfg = DataConfig(val_size=5000 if profile == "paper" else 1000 if profile == "quick" else 64)
    if profile == "quick":
        data_cfg = replace(data_cfg, limit_train=8000, limit_test=2000)
    elif profile == "smoke":
        data_cfg = replace(data_cfg, limit_train=256, limit_test=128)
    loss = {m: dict(v) for m, v in _LOSS["cnn"].items()}
    loss["dkd"] = {"warmup": max(1, round(20 * train.epochs / 240))}
    for m, v in pair.loss.items():
        loss[m] = {**loss.get(m, {}), **v}
    # one network per role: FitNets guides the pair's own student; no "modified" student
    models = {"teacher": pair.teacher, "student": pair.student, "fitnet": pair.student, "student_mod": pair.student}
    return Preset(models, train=train, teacher_train=train, data=data_cfg, loss=loss,
                  prune_epochs={"smoke": 1, "quick": 3, "paper": 5}[profile])


def preset(dataset: str, profile: str = "quick") -> Preset:
    if profile not in PROFILES:
        raise ValueError(f"Unknown profile '{profile}'. Available: {', '.join(PROFILES)}")
    data, pair = split_study(dataset)
    if pair:
        return _pair_preset(data, pair, profile)
    fam = family(dataset)
    if fam == "mlp":
        train = TrainConfig(epochs=20, batch_size=256, optimizer="adam", lr=1e-3, schedule="cosine", augment=False)
        names = ("mlp_teacher", "mlp_student", "mlp_fitnet", "mlp_student_mod")
        data = DataConfig(val_size=data_entry(split_study(dataset)[0]).val_size)
    else:
        # evaluation in batches of 128: at 1024 a CNN's activations fall out of cache and the
        # per-epoch val/test passes run 1.8x (teacher) to 2.2x (student) slower on 2 CPU cores
        train = TrainConfig(epochs=20, batch_size=128, optimizer="adam", lr=1e-3, schedule="cosine", augment=False,
                            eval_batch_size=128)
        names = ("cnn_teacher", "cnn_student", "cnn_fitnet", "cnn_student_nobn")
        data = DataConfig(val_size=data_entry(split_study(dataset)[0]).val_size)
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


# ---------------------------------------------------------------- tuning (kd_helpers.tuning)

@dataclass(frozen=True)
class Range:
    """One hyper-parameter's search range: ``[low, high]``, sampled on a log scale when ``log``,
    integers when ``integer``; ``source`` says where the range comes from."""
    low: float
    high: float
    log: bool = False
    integer: bool = False
    source: str = ""


# The shared training knobs every tuned run searches, the no-KD baselines included (the same
# budget for every method): Adam's learning rate a decade around the protocol's 1e-3 and an L2
# weight decay (the study's student has none; its dropout is the architecture's).
SHARED_SPACE = {
    "lr": Range(2e-4, 5e-3, log=True, source="the protocol's Adam 1e-3, x0.2 to x5"),
    "weight_decay": Range(1e-6, 1e-3, log=True, source="0 in the protocol; 5e-4 in RepDistiller's SGD recipe"),
}

# Each method's own hyper-parameters: ranges around the paper's and the reference code's values
# (the loss classes' docstrings name the code), wide enough to hold every value published for them.
SEARCH_SPACE: dict[str, dict[str, Range]] = {
    "ce": {},
    "kd": {"T": Range(1.0, 20.0, log=True, source="Hinton et al. 2015: T 20 on MNIST; RepDistiller T 4"),
           "alpha": Range(0.05, 0.95, source="seed -A 0.9 (alpha 0.1); RepDistiller 0.1 (CE 0.1, KD 0.9)")},
    "fitnets": {"stage1_frac": Range(0.0, 0.5, source="0: one stage (frameworks); Romero et al.: a stage of its own"),
                "beta": Range(0.5, 400.0, log=True,
                              source="stage-2 hint weight: seed -B 2 = 4; RepDistiller 100 = 200 (fitnets docstring)")},
    "rkd": {"w_d": Range(1.0, 250.0, log=True, source="Park et al. 2019: 25; the seed study 100"),
            "w_a": Range(2.0, 500.0, log=True, source="Park et al. 2019: 50")},
    "feature_kd": {"T": Range(1.0, 20.0, log=True, source="as kd"),
                   "alpha": Range(0.05, 0.5, source="seed (1-A) 0.1"),
                   "beta": Range(0.05, 0.45, source="the study's 0.45; alpha + beta <= 0.95 by construction")},
    "at": {"beta": Range(100.0, 10000.0, log=True, source="Zagoruyko & Komodakis 2017: 1000 (beta/2 per layer)")},
    "dml": {"beta": Range(0.25, 4.0, log=True, source="Zhang et al. 2018 / seed -B 1")},
    "byot": {"alpha": Range(0.05, 0.9, source="luanyunteng 0.1; Zhang et al. 2019 0.3"),
             "T": Range(1.0, 8.0, log=True, source="luanyunteng 3"),
             "lam": Range(1e-7, 0.1, log=True, source="luanyunteng 1e-6; the first author's later code 0.03")},
    "dist": {"beta": Range(0.25, 8.0, log=True, source="Huang et al. 2022: 1 (ImageNet), 2 (CIFAR-100)"),
             "gamma": Range(0.25, 8.0, log=True, source="Huang et al. 2022: 1, 2"),
             "tau": Range(1.0, 8.0, log=True, source="Huang et al. 2022: 1 (ImageNet), 4 (CIFAR-100)")},
    "srd": {"alpha": Range(0.25, 4.0, log=True, source="SRD_ossl -A 1"),
            "beta": Range(0.25, 16.0, log=True, source="SRD_ossl -B 2")},
    "srd_dist": {"alpha": Range(0.25, 4.0, log=True, source="seed SRDwithDIST -A 1"),
                 "beta": Range(1.0, 40.0, log=True, source="seed -B 10 (width), -B 4 (WRN-40-4 -> WRN-16-2)")},
    "dkd": {"alpha": Range(0.25, 4.0, log=True, source="Zhao et al. 2022 / mdistiller: 1"),
            "beta": Range(1.0, 16.0, log=True, source="mdistiller: 8 (2-8 by pair)"),
            "T": Range(1.0, 8.0, log=True, source="mdistiller: 4"),
            "warmup": Range(1, 5, integer=True, source="mdistiller: 20 of 240 epochs; the study's 2 of 20")},
}

# The variants a dataset's tuning compares: every method on its usual network and the no-KD
# baseline of each network a method trains (FitNets' thin-deep student has its own).
TUNED = ("baseline", "fitnet_baseline", "kd", "fitnets", "rkd", "feature_kd", "at", "dml", "byot", "dist", "srd",
         "srd_dist", "dkd")
# Trials per (dataset, variant), pruned trials counted: one budget for every variant of a
# dataset. 20 on MNIST and 12 on CIFAR-10 keep the tuning near the seeds' cost on two CPU cores
# (issue 31's plan: ~35-40 CPU-hours in all); ``smoke``/``quick`` only exercise the machinery.
TRIALS = {"smoke": 2, "quick": 4, "paper": {"mlp": 20, "cnn": 12, "pair": 12}}
# Seeds each tuned configuration is retrained on for the tables (paired across variants).
TUNED_SEEDS = {"smoke": 1, "quick": 3, "paper": {"mlp": 10, "cnn": 8, "pair": 8}}
# Trials train on this seed, which no reported run uses (their seeds are 0, 1, ...).
TUNING_SEED = 1000


# the methods a family cannot run (notebooks' ``plan.STEPS`` say why: AT needs spatial maps)
NOT_FOR = {"at": ("mlp",)}


def tuned_variants(dataset: str) -> list[str]:
    """The variants ``dataset``'s tuning compares (``TUNED`` that its family can run)."""
    return [v for v in TUNED if family(dataset) not in NOT_FOR.get(variant(v).method, ())]


def tuning_budget(dataset: str, profile: str) -> tuple[int, int]:
    """(trials per variant, seeds per tuned configuration) for ``dataset`` under ``profile``."""
    pick = lambda v: v[family(dataset)] if isinstance(v, dict) else v
    return pick(TRIALS[profile]), pick(TUNED_SEEDS[profile])


# The protocol ablation (notebooks/01_teacher's appendix; kd_helpers.ablation trains it,
# analysis.ablation_report reads it): family -> rows (label, role, changes). ``role`` is the study
# run the row varies; ``changes`` a model name, loss hyper-parameters (``loss``), TrainConfig fields,
# ``epochs_scale`` / ``val_scale`` (the study's epochs / validation split scaled). A run records its
# role and changes (``RunSpec.role``, ``.protocol``); an empty change is the study's own run.
ABLATION_GRID = {
    "mlp": [
        ("teacher, reference: dropout 0.2 on hidden units, constant lr", "teacher",
         dict(model="mlp_teacher_d02", schedule="constant")),
        ("teacher, Hinton dropout (input 0.2, hidden 0.5), constant lr", "teacher", dict(schedule="constant")),
        ("teacher, dropout 0.2, cosine lr", "teacher", dict(model="mlp_teacher_d02")),
        ("teacher, Hinton dropout, cosine lr (the study's)", "teacher", {}),
        ("teacher, the study's in fp32", "teacher", dict(precision="fp32")),
        ("student, reference: no dropout, constant lr", "baseline",
         dict(model="mlp_student_nodrop", schedule="constant")),
        ("student, no dropout, cosine lr", "baseline", dict(model="mlp_student_nodrop")),
        ("student, dropout (input 0.1, hidden 0.3), cosine lr (the study's)", "baseline", {}),
        ("teacher, the study's, validation split 1/5 as large (more training images)", "teacher",
         dict(val_scale=0.2)),
        ("student, the study's, validation split 1/5 as large (more training images)", "baseline",
         dict(val_scale=0.2)),
        ("teacher, the study's, 3x the epochs", "teacher", dict(epochs_scale=3)),
        ("teacher, the study's + input jitter of up to 2 pixels (Hinton et al.)", "teacher", dict(augment=True)),
        ("student, the study's, 3x the epochs", "baseline", dict(epochs_scale=3)),
        ("student, the study's + input jitter of up to 2 pixels", "baseline", dict(augment=True)),
        ("vanilla KD, reference: no-dropout student, constant lr, T=20, alpha=0.1", "kd",
         dict(model="mlp_student_nodrop", schedule="constant")),
        ("vanilla KD, the study's: dropout student, cosine lr, T=20, alpha=0.1", "kd", {}),
        ("vanilla KD, the study's with T=4", "kd", dict(loss=dict(T=4.0))),
        ("vanilla KD, the study's with alpha=0.5 (half the weight on the labels)", "kd", dict(loss=dict(alpha=0.5))),
    ],
    "cnn": [
        ("teacher, reference: no BatchNorm, constant lr", "teacher",
         dict(model="cnn_teacher_nobn", schedule="constant")),
        ("teacher, BatchNorm, constant lr", "teacher", dict(schedule="constant")),
        ("teacher, no BatchNorm, cosine lr", "teacher", dict(model="cnn_teacher_nobn")),
        ("teacher, BatchNorm, cosine lr (the study's)", "teacher", {}),
        ("student, reference: no BatchNorm, constant lr", "baseline",
         dict(model="cnn_student_nobn", schedule="constant")),
        ("student, BatchNorm, cosine lr (the study's)", "baseline", {}),
    ],
}
