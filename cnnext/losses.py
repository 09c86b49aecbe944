"""Losses: batch-mean values and their gradients w.r.t. the model output (or its logits).

Each loss validates and converts the labels once per ``fit``/``evaluate`` call with
:meth:`Loss.prepare_targets`; the per-batch methods then do no checks.

Cross-entropies fuse with their natural output activation (softmax for the categorical ones,
sigmoid for the binary one): when the model's last layer applies that activation the model asks
the loss for :meth:`Loss.logits_value_grad_and_output` on the pre-activation ``z`` (which also
gives the activation's output, so a training step computes it once; for softmax that is the
backend's ``softmax_cross_entropy`` op, whose output equals its ``softmax_forward``). The value
then comes from ``log_softmax(z) = z - max(z) - log(sum(exp(z - max(z))))`` (or the stable
``max(z, 0) - z*t + log1p(exp(-|z|))`` for sigmoid) and the gradient is ``(p - t) / M``, so very
large logits neither overflow nor give ``log(0)``. ``from_logits=True`` means the model output
itself is the logits (last layer linear). Otherwise probabilities are clipped to
``[eps, 1 - eps]`` with ``eps = 1e-7`` before the logarithm.

Averaging: cross-entropies sum over classes and average over the ``M`` label positions (``M = N``
for ``(N, K)`` outputs); MSE and binary cross-entropy average over every element.
"""
from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np

from ._checks import check_bool
from .backend import resolve

EPSILON = 1e-7
# How far a categorical target row may sum from 1 (float32 rounding of smoothed labels).
ROW_SUM_TOLERANCE = 1e-3


def _n_labels_error(y: np.ndarray, output_shape: tuple, hint: str) -> ValueError:
    return ValueError(
        f"labels of shape {y.shape} do not fit the model output of shape "
        f"(N, {', '.join(map(str, output_shape))}): {hint}"
    )


class Loss:
    """Base class. ``fused_activation`` names the output activation the loss fuses with."""

    name = "loss"
    fused_activation: Optional[str] = None

    def __init__(self, from_logits: bool = False):
        self.from_logits = check_bool(from_logits, "from_logits")

    def prepare_targets(self, y: Any, output_shape: tuple, dtype: np.dtype) -> np.ndarray:
        """Validate labels for ``len(y)`` samples and an output of ``output_shape`` (no batch
        axis); returns them in the form the per-batch methods take."""
        y = np.asarray(y)
        if y.shape[1:] == tuple(output_shape):
            return self._check_values(y.astype(dtype, copy=False))
        if output_shape == (1,) and y.ndim == 1:
            return self._check_values(y.reshape(-1, 1).astype(dtype, copy=False))
        raise _n_labels_error(y, output_shape, "give one target per output value")

    def _check_values(self, t: np.ndarray) -> np.ndarray:
        if not np.isfinite(t).all():
            raise ValueError("labels contain NaN or infinite values")
        return t

    def value(self, t: np.ndarray, p: np.ndarray) -> float:
        """Loss of predictions ``p`` against prepared targets ``t``."""
        raise NotImplementedError

    def gradient(self, t: np.ndarray, p: np.ndarray) -> np.ndarray:
        """``dL/dp``, same shape and dtype as ``p``."""
        raise NotImplementedError

    def logits_value_and_grad(self, t: np.ndarray, z: np.ndarray,
                              backend: Optional[str] = None) -> tuple[float, np.ndarray]:
        """Loss and ``dL/dz`` from the logits ``z`` (for fused or ``from_logits`` use)."""
        return self.logits_value_grad_and_output(t, z, backend)[:2]

    def logits_value_grad_and_output(
        self, t: np.ndarray, z: np.ndarray, backend: Optional[str] = None
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """Loss, ``dL/dz`` and the fused activation of ``z`` (the model output, equal bit for bit
        to what the activation layer computes on the same ``backend``), in one pass over the
        logits."""
        raise NotImplementedError(f"{type(self).__name__} has no logits form")

    def get_config(self) -> dict[str, Any]:
        return {"from_logits": self.from_logits}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Loss":
        return cls(**config)


class MeanSquaredError(Loss):
    """``mean((p - t)^2)`` over every element; ``dL/dp = 2 (p - t) / size``."""

    name = "mean_squared_error"

    def __init__(self, from_logits: bool = False):
        if from_logits:
            raise ValueError("mean_squared_error has no from_logits form")
        super().__init__()

    def value(self, t: np.ndarray, p: np.ndarray) -> float:
        d = p - t
        return float(np.vdot(d, d)) / d.size

    def gradient(self, t: np.ndarray, p: np.ndarray) -> np.ndarray:
        d = p - t
        d *= 2.0 / d.size
        return d

    def get_config(self) -> dict[str, Any]:
        return {}


class CategoricalCrossentropy(Loss):
    """``-sum(t * log p)`` over the class (last) axis, averaged over label positions.

    Labels may be one-hot / probability rows of the output's shape (values >= 0 summing to 1,
    within ``ROW_SUM_TOLERANCE``), or integer class ids with the class axis dropped (``(N,)`` or
    ``(N, 1)`` for an ``(N, K)`` output); the sparse variant below accepts the same.
    """

    name = "categorical_crossentropy"
    fused_activation = "softmax"

    def prepare_targets(self, y: Any, output_shape: tuple, dtype: np.dtype) -> np.ndarray:
        y = np.asarray(y)
        k = output_shape[-1]
        if k < 2:
            raise ValueError(
                f"{self.name} needs an output with >= 2 classes, the model outputs {output_shape}; "
                "use binary_crossentropy for a single sigmoid unit"
            )
        if y.shape[1:] == tuple(output_shape):
            return self._check_rows(self._check_values(y.astype(dtype, copy=False)))
        if y.shape[1:] in (tuple(output_shape[:-1]), (*output_shape[:-1], 1)):
            ids = y.reshape(y.shape[0], *output_shape[:-1])
            if not np.issubdtype(ids.dtype, np.integer):
                if not np.isfinite(ids).all() or np.any(ids != np.round(ids)):
                    raise ValueError("class-id labels must be integers")
            if ids.size and (ids.min() < 0 or ids.max() >= k):
                bad = ids.min() if ids.min() < 0 else ids.max()
                raise ValueError(
                    f"label {int(bad)} is out of range for a model with {k} output classes "
                    f"(valid ids: 0..{k - 1})"
                )
            return ids.astype(np.intp)
        raise _n_labels_error(
            y, output_shape,
            f"give class ids of shape (N,) or one-hot rows of shape (N, {k}) for {k} classes",
        )

    def _check_rows(self, t: np.ndarray) -> np.ndarray:
        """One-hot / probability rows must be distributions: the fused gradient ``(p - t) / M``
        is the gradient of the loss only when every row sums to 1."""
        sums = t.sum(axis=-1, dtype=np.float64)
        negative = (t < 0).any(axis=-1)
        bad = negative | (np.abs(sums - 1.0) > ROW_SUM_TOLERANCE)
        if bad.any():
            index = tuple(np.argwhere(bad)[0])
            problem = "has negative values" if negative[index] else f"sums to {sums[index]:.6g}"
            raise ValueError(
                f"{self.name} targets must be probability rows (values >= 0 summing to 1 over "
                f"the class axis), but row y[{', '.join(map(str, index))}] {problem}; use "
                "binary_crossentropy for multi-label targets"
            )
        return t

    @staticmethod
    def _rows(t: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = p.shape[-1]
        p2 = p.reshape(-1, k)
        return (t.reshape(-1) if t.ndim < p.ndim else t.reshape(-1, k)), p2

    def value(self, t: np.ndarray, p: np.ndarray) -> float:
        if self.from_logits:
            return self.logits_value_and_grad(t, p)[0]
        t2, p2 = self._rows(t, p)
        logp = np.log(np.clip(p2, EPSILON, 1.0 - EPSILON))
        if t2.ndim == 1:
            return -float(logp[np.arange(len(t2)), t2].sum()) / len(t2)
        return -float(np.vdot(t2, logp)) / len(t2)

    def gradient(self, t: np.ndarray, p: np.ndarray) -> np.ndarray:
        t2, p2 = self._rows(t, p)
        m = len(p2)
        clipped = np.clip(p2, EPSILON, 1.0 - EPSILON)
        if t2.ndim == 1:
            g = np.zeros_like(p2)
            rows = np.arange(m)
            g[rows, t2] = -1.0 / (m * clipped[rows, t2])
        else:
            g = -t2 / (m * clipped)
        return g.reshape(p.shape)

    def logits_value_grad_and_output(
        self, t: np.ndarray, z: np.ndarray, backend: Optional[str] = None
    ) -> tuple[float, np.ndarray, np.ndarray]:
        t2, z2 = self._rows(t, z)
        loss, grad, p = resolve(backend).softmax_cross_entropy(np.ascontiguousarray(z2), t2)
        return loss, grad.reshape(z.shape), p.reshape(z.shape)


class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    """Categorical cross-entropy named for integer class-id labels (one-hot is accepted too)."""

    name = "sparse_categorical_crossentropy"


class BinaryCrossentropy(Loss):
    """``-mean(t log p + (1 - t) log(1 - p))`` over every element; targets in ``[0, 1]``."""

    name = "binary_crossentropy"
    fused_activation = "sigmoid"

    def _check_values(self, t: np.ndarray) -> np.ndarray:
        if not (np.isfinite(t).all() and t.min(initial=0) >= 0 and t.max(initial=0) <= 1):
            raise ValueError("binary_crossentropy labels must lie in [0, 1]")
        return t

    def value(self, t: np.ndarray, p: np.ndarray) -> float:
        if self.from_logits:
            return self.logits_value_and_grad(t, p)[0]
        q = np.clip(p, EPSILON, 1.0 - EPSILON)
        return -float(np.mean(t * np.log(q) + (1.0 - t) * np.log1p(-q)))

    def gradient(self, t: np.ndarray, p: np.ndarray) -> np.ndarray:
        q = np.clip(p, EPSILON, 1.0 - EPSILON)
        return (q - t) / (q * (1.0 - q) * p.size)

    def logits_value_grad_and_output(
        self, t: np.ndarray, z: np.ndarray, backend: Optional[str] = None
    ) -> tuple[float, np.ndarray, np.ndarray]:
        e = np.exp(-np.abs(z))  # NumPy on every backend, as the sigmoid activation
        loss = float(np.mean(np.maximum(z, 0) - z * t + np.log1p(e)))
        p = np.where(z >= 0, 1 / (1 + e), e / (1 + e))
        grad = p - t
        grad *= 1.0 / z.size
        return loss, grad, p


LOSSES: dict[str, type[Loss]] = {
    cls.name: cls
    for cls in (MeanSquaredError, CategoricalCrossentropy, SparseCategoricalCrossentropy,
                BinaryCrossentropy)
}
ALIASES = {"mse": "mean_squared_error", "cce": "categorical_crossentropy",
           "sparse_cce": "sparse_categorical_crossentropy", "bce": "binary_crossentropy"}
CLASSES = {cls.__name__: cls for cls in LOSSES.values()}


def get(spec: Union[str, Loss, dict[str, Any]]) -> Loss:
    """A loss from a name (``"mse"``, ``"categorical_crossentropy"`` ...), an instance, or a
    ``{"class_name", "config"}`` dict as written by :func:`serialize`."""
    if isinstance(spec, Loss):
        return spec
    if isinstance(spec, dict):
        cls = CLASSES.get(spec.get("class_name"))
        if cls is None:
            raise ValueError(f"unknown loss class {spec.get('class_name')!r}")
        return cls.from_config(spec.get("config", {}))
    key = spec.lower() if isinstance(spec, str) else spec
    key = ALIASES.get(key, key)
    if key not in LOSSES:
        raise ValueError(f"unknown loss {spec!r}; expected one of {sorted([*LOSSES, *ALIASES])}")
    return LOSSES[key]()


def serialize(loss: Loss) -> dict[str, Any]:
    return {"class_name": type(loss).__name__, "config": loss.get_config()}
