"""cnnext: small and medium CNNs on the CPU, with compiled Cython + OpenMP kernels."""
from . import (
    activations,
    callbacks,
    datasets,
    initializers,
    layers,
    losses,
    metrics,
    ops,
    optimizers,
    preprocessing,
    presets,
    schedules,
)
from ._config import __version__, config, get_num_threads, set_num_threads, show_config
from .backend import available_backends, get_backend, set_backend, use_backend
from .io import ModelFileError, load_model, save_model
from .models import Sequential

__all__ = [
    "ModelFileError",
    "Sequential",
    "__version__",
    "activations",
    "available_backends",
    "callbacks",
    "config",
    "datasets",
    "get_backend",
    "get_num_threads",
    "initializers",
    "layers",
    "load_model",
    "losses",
    "metrics",
    "ops",
    "optimizers",
    "preprocessing",
    "presets",
    "save_model",
    "schedules",
    "set_backend",
    "set_num_threads",
    "show_config",
    "use_backend",
]
