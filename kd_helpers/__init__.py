"""kd-study helpers: data, models, losses, one training loop, results store, statistics, plots."""
from .core.data import DataConfig, load_dataset
from .experiment import RunSpec, distill, run, train_teacher
from .core.losses import LOSSES, build_loss
from .core.models import MODELS, create_model
from .core import zoo  # noqa: F401,E402 - registers the residual networks in MODELS
from .store.results import load_histories, load_results
from .core.train import TrainConfig, fit

__all__ = ["DataConfig", "load_dataset", "RunSpec", "distill", "run", "train_teacher", "LOSSES", "build_loss",
           "MODELS", "create_model", "load_histories", "load_results", "TrainConfig", "fit"]
