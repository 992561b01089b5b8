"""kd-study helpers: data, models, losses, one training loop, results store, statistics, plots."""
from .data import DataConfig, load_dataset
from .experiment import RunSpec, distill, run, train_teacher
from .losses import LOSSES, build_loss
from .models import MODELS, create_model
from . import zoo  # noqa: F401,E402 - registers the residual networks in MODELS
from .results import load_histories, load_results
from .train import TrainConfig, fit

__all__ = ["DataConfig", "load_dataset", "RunSpec", "distill", "run", "train_teacher", "LOSSES", "build_loss",
           "MODELS", "create_model", "load_histories", "load_results", "TrainConfig", "fit"]
