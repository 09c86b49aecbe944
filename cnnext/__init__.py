"""cnnext: small and medium CNNs on the CPU, with compiled Cython + OpenMP kernels."""
from . import ops
from ._config import __version__, config, get_num_threads, set_num_threads, show_config
from .backend import available_backends, get_backend, set_backend, use_backend

__all__ = [
    "__version__",
    "available_backends",
    "config",
    "get_backend",
    "get_num_threads",
    "ops",
    "set_backend",
    "set_num_threads",
    "show_config",
    "use_backend",
]
