"""Element-wise activations and their backward passes.

An :class:`Activation` maps the pre-activation ``z`` to ``y`` and turns ``dL/dy`` into ``dL/dz``.
``backward`` receives both ``z`` and ``y`` so every rule uses the operand that is exact for it:
ReLU and leaky ReLU use the sign of the input ``z`` (not of the output), sigmoid and tanh use their
output, softmax applies its full Jacobian (``dz = y * (dy - sum(dy * y))`` over the last axis).
Sigmoid and softmax are computed in a numerically stable way (no overflow for large ``|z|``).

Activations are named by strings (``"relu"``), by dicts (``{"name": "leaky_relu", "alpha": 0.2}``)
or passed as instances; :func:`get` accepts all three and :meth:`Activation.get_config` returns the
shortest JSON form that :func:`get` turns back into an equal activation.
"""
from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np

from .backend import resolve
from .workspace import into


def _by_kernel(kernel: Any, *args: np.ndarray, out: Optional[np.ndarray]) -> np.ndarray:
    """``kernel(*args, out)`` (a backend op), with ``out`` any array of the result's shape and
    dtype: the ops write only into C-contiguous ones, so other layouts get a copy of the result."""
    if out is not None and not out.flags.c_contiguous:
        return into(out, kernel(*args, None))
    return kernel(*args, out)


class Activation:
    """Identity base class: ``y = z``; subclasses override :meth:`forward` and :meth:`backward`.

    ``backend`` names the op table for activations that have backend kernels (ReLU, softmax); the
    others are NumPy expressions on every backend and ignore it. ``out``, when given, is an array
    of the result's shape and dtype that receives the result and is returned (the kernels write
    into it; the NumPy expressions copy their result there).
    """

    name = "linear"

    def forward(self, z: np.ndarray, backend: Optional[str] = None,
                out: Optional[np.ndarray] = None) -> np.ndarray:
        return into(out, z)

    def backward(self, dy: np.ndarray, z: np.ndarray, y: np.ndarray,
                 backend: Optional[str] = None, out: Optional[np.ndarray] = None) -> np.ndarray:
        """``dL/dz`` from ``dL/dy``; ``z`` is the input and ``y`` the output of :meth:`forward`."""
        return into(out, dy)

    def get_config(self) -> Union[str, dict[str, Any]]:
        return self.name

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Linear(Activation):
    name = "linear"


class ReLU(Activation):
    name = "relu"

    def forward(self, z: np.ndarray, backend: Optional[str] = None,
                out: Optional[np.ndarray] = None) -> np.ndarray:
        return _by_kernel(resolve(backend).relu_forward, z, out=out)

    def backward(self, dy: np.ndarray, z: np.ndarray, y: np.ndarray,
                 backend: Optional[str] = None, out: Optional[np.ndarray] = None) -> np.ndarray:
        return _by_kernel(resolve(backend).relu_backward, dy, z, out=out)


class LeakyReLU(Activation):
    """``y = z`` for ``z > 0`` else ``alpha * z`` (default ``alpha`` 0.01, as in PyTorch)."""

    name = "leaky_relu"

    def __init__(self, alpha: float = 0.01):
        alpha = float(alpha)
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"leaky_relu alpha must be in [0, 1); received alpha={alpha}")
        self.alpha = alpha

    def forward(self, z: np.ndarray, backend: Optional[str] = None,
                out: Optional[np.ndarray] = None) -> np.ndarray:
        return into(out, np.where(z > 0, z, z * self.alpha))

    def backward(self, dy: np.ndarray, z: np.ndarray, y: np.ndarray,
                 backend: Optional[str] = None, out: Optional[np.ndarray] = None) -> np.ndarray:
        return into(out, np.where(z > 0, dy, dy * self.alpha))

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "alpha": self.alpha}

    def __repr__(self) -> str:
        return f"LeakyReLU(alpha={self.alpha})"


class Sigmoid(Activation):
    """``1 / (1 + exp(-z))`` evaluated as ``exp(z) / (1 + exp(z))`` for negative ``z``."""

    name = "sigmoid"

    def forward(self, z: np.ndarray, backend: Optional[str] = None,
                out: Optional[np.ndarray] = None) -> np.ndarray:
        e = np.exp(-np.abs(z))  # in (0, 1]: never overflows
        return into(out, np.where(z >= 0, 1 / (1 + e), e / (1 + e)))

    def backward(self, dy: np.ndarray, z: np.ndarray, y: np.ndarray,
                 backend: Optional[str] = None, out: Optional[np.ndarray] = None) -> np.ndarray:
        return into(out, dy * y * (1 - y))


class Tanh(Activation):
    name = "tanh"

    def forward(self, z: np.ndarray, backend: Optional[str] = None,
                out: Optional[np.ndarray] = None) -> np.ndarray:
        return np.tanh(z, out=out)

    def backward(self, dy: np.ndarray, z: np.ndarray, y: np.ndarray,
                 backend: Optional[str] = None, out: Optional[np.ndarray] = None) -> np.ndarray:
        return into(out, dy * (1 - y * y))


class Softmax(Activation):
    """Softmax over the last axis (the row maximum is subtracted before ``exp``), by the
    backend's ``softmax_forward`` op, as the fused categorical cross-entropy."""

    name = "softmax"

    def forward(self, z: np.ndarray, backend: Optional[str] = None,
                out: Optional[np.ndarray] = None) -> np.ndarray:
        return _by_kernel(resolve(backend).softmax_forward, z, out=out)

    def backward(self, dy: np.ndarray, z: np.ndarray, y: np.ndarray,
                 backend: Optional[str] = None, out: Optional[np.ndarray] = None) -> np.ndarray:
        return into(out, y * (dy - (dy * y).sum(axis=-1, keepdims=True)))


ACTIVATIONS: dict[str, type[Activation]] = {
    cls.name: cls for cls in (Linear, ReLU, LeakyReLU, Sigmoid, Tanh, Softmax)
}
ALIASES = {None: "linear", "none": "linear", "identity": "linear", "leakyrelu": "leaky_relu"}


def get(spec: Union[str, dict[str, Any], Activation, None]) -> Activation:
    """An :class:`Activation` from a name, a ``{"name": ..., **kwargs}`` dict, an instance or None
    (linear). Unknown names raise ValueError listing the known ones."""
    if isinstance(spec, Activation):
        return spec
    kwargs: dict[str, Any] = {}
    if isinstance(spec, dict):
        kwargs = dict(spec)
        spec = kwargs.pop("name", None)
    if spec is not None and not isinstance(spec, str):
        raise TypeError(
            f"activation must be a name, a dict, an Activation or None; received {spec!r}"
        )
    key = ALIASES.get(spec.lower() if isinstance(spec, str) else spec, spec)
    key = key.lower() if isinstance(key, str) else key
    if key not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {spec!r}; expected one of {sorted(ACTIVATIONS)}"
        )
    try:
        return ACTIVATIONS[key](**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad arguments for activation {key!r}: {kwargs!r} ({exc})") from None
