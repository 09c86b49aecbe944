"""One op table, two implementations.

Every backend provides the same kernel-level functions, with identical signatures and semantics.
They receive arguments already validated and normalised by :mod:`cnnext.ops` (C-contiguous arrays of
one float dtype, tuples of ints) and return freshly allocated arrays, or write their (first)
result into ``out`` and return it when ``out`` is given (see :mod:`cnnext.workspace`):

  conv2d_forward(x, w, b, stride, padding, dilation, out=None, relu=False) -> y
  conv2d_backward(dy, x, w, stride, padding, dilation, input_grad=True, out=None)
      -> (dx or None, dw, db)
  pool2d_forward(x, size, stride, padding, mode, out=None, relu=False) -> y
  pool2d_backward(dy, x, size, stride, padding, mode, out=None, relu=False) -> dx
  upsample2d_forward(x, scale, out=None) -> y
  upsample2d_backward(dy, scale, out=None) -> dx
  dense_forward(x, w, b, out=None) -> y
  dense_backward(dy, x, w, input_grad=True, out=None) -> (dx or None, dw, db)
  relu_forward(z, out=None) -> y
  relu_backward(dy, z, out=None) -> dz
  softmax_forward(z, out=None) -> y
  softmax_cross_entropy(z, t) -> (loss, dz, y)
  sgd_update(param, grad, buf, lr, momentum, nesterov, weight_decay) -> None
  adam_update(param, grad, m, v, lr, beta_1, beta_2, epsilon, weight_decay, decoupled, t) -> None
  rmsprop_update(param, grad, square_avg, grad_avg, buf, lr, rho, momentum, epsilon,
                 weight_decay) -> None

Shapes: ``x (N, H, W, C)``, ``w (KH, KW, C, F)``, ``b (F,)`` or None, ``y (N, Ho, Wo, F)``.
``stride``/``dilation``/``size``/``scale`` are ``(h, w)`` tuples, ``padding`` is
``(top, bottom, left, right)``, ``mode`` is ``"max"``, ``"min"`` or ``"avg"``; ``relu`` (max and
min only) makes the pooling ops compute ``relu(pool(x))`` and its gradient, and the convolution
``relu(conv(x))``. The dense ops take
``x (N, D)``, ``w (D, U)``, ``b (U,)`` or None and give ``y (N, U)``. The ReLU ops take arrays of
any shape (``dy`` and ``z`` of one shape). ``softmax_forward`` works on the last axis of any
shape; ``softmax_cross_entropy`` takes logits ``z (N, K)`` and class ids ``t (N,)`` (intp, in
range) or target rows ``t (N, K)`` of ``z``'s dtype, and its ``y`` equals ``softmax_forward(z)``
bit for bit (see :mod:`cnnext.losses`). The optimizer updates (see :mod:`cnnext.optimizers`)
change ``param`` and its slots in place; ``buf`` and ``grad_avg`` are None when the rule has no
such slot, and the compiled ones take C-contiguous arrays of one dtype and shape.

Backends: ``"numpy"`` (the readable reference, always present) and ``"cython"`` (the compiled
kernels, present when the extension modules were built). The default is ``"cython"`` when it is
available, overridden by the ``CNNEXT_BACKEND`` environment variable (an unknown or unavailable
name there warns and keeps the default) or :func:`set_backend` (which raises ValueError for one).
"""
from __future__ import annotations

import contextlib
import os
import warnings
from types import SimpleNamespace
from typing import Iterator

from . import numpy_ops

OP_NAMES = (
    "conv2d_forward",
    "conv2d_backward",
    "pool2d_forward",
    "pool2d_backward",
    "upsample2d_forward",
    "upsample2d_backward",
    "dense_forward",
    "dense_backward",
    "relu_forward",
    "relu_backward",
    "softmax_forward",
    "softmax_cross_entropy",
    "sgd_update",
    "adam_update",
    "rmsprop_update",
)


def _table(*modules) -> SimpleNamespace:
    """Collect OP_NAMES from the first module that defines each one."""
    ops = {}
    for name in OP_NAMES:
        for mod in modules:
            if hasattr(mod, name):
                ops[name] = getattr(mod, name)
                break
        else:
            raise ImportError(f"no backend module defines {name}")
    return SimpleNamespace(**ops)


def _load_compiled() -> tuple[SimpleNamespace | None, str | None]:
    try:
        from .._ext import (_activation, _conv2d, _dense, _optimizers, _pool2d, _softmax,
                            _upsample2d)
    except ImportError as exc:  # not built, or built for another interpreter
        return None, str(exc)
    return _table(_conv2d, _pool2d, _upsample2d, _dense, _activation, _softmax, _optimizers), None


BACKENDS: dict[str, SimpleNamespace] = {"numpy": _table(numpy_ops)}
_compiled, COMPILED_IMPORT_ERROR = _load_compiled()
if _compiled is not None:
    BACKENDS["cython"] = _compiled


def available_backends() -> list[str]:
    return sorted(BACKENDS)


def _check_name(name: str) -> str:
    if name not in ("numpy", "cython"):
        raise ValueError(f"unknown backend {name!r}; expected 'numpy' or 'cython'")
    if name not in BACKENDS:
        raise ValueError(
            f"backend {name!r} is not available (compiled kernels failed to import: "
            f"{COMPILED_IMPORT_ERROR}); use 'numpy' or rebuild cnnext"
        )
    return name


def _initial_backend() -> str:
    """``CNNEXT_BACKEND`` when it names an available backend, else the default (``"cython"`` when
    compiled, else ``"numpy"``). A bad value only warns (RuntimeWarning): ``import cnnext`` must
    not fail because of the environment."""
    default = "cython" if "cython" in BACKENDS else "numpy"
    env = os.environ.get("CNNEXT_BACKEND", "").strip()
    if not env:
        return default
    try:
        return _check_name(env.lower())
    except ValueError as exc:
        warnings.warn(f"CNNEXT_BACKEND={env!r} ignored: {exc}; "
                      f"using the default backend {default!r}", RuntimeWarning, stacklevel=2)
        return default


_current = _initial_backend()


def get_backend() -> str:
    """Name of the current default backend."""
    return _current


def set_backend(name: str) -> None:
    """Make ``name`` (``"numpy"`` or ``"cython"``) the default backend."""
    global _current
    _current = _check_name(name)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Temporarily switch the default backend: ``with use_backend("numpy"): ...``."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def resolve(name: str | None = None) -> SimpleNamespace:
    """The op table for ``name``, or for the current default when ``name`` is None."""
    return BACKENDS[_current if name is None else _check_name(name)]
