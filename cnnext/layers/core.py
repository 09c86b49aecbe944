"""Dense, Dropout and Activation layers (any input rank; Dense acts on the last axis)."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .. import initializers
from .._checks import check_bool, check_positive_int
from ..backend import resolve
from .base import ActivatedLayer, Layer, Shape, WeightSpec, WeightSpecs, check_float


class Dense(ActivatedLayer):
    """``y = activation(x @ kernel + bias)`` on the last axis: ``(N, ..., D) -> (N, ..., units)``
    with ``kernel (D, units)`` and ``bias (units,)``."""

    def __init__(
        self,
        units: int,
        activation: Any = None,
        use_bias: bool = True,
        kernel_initializer: str = "glorot_uniform",
        bias_initializer: str = "zeros",
        **kwargs: Any,
    ):
        super().__init__(activation=activation, **kwargs)
        self.units = check_positive_int(units, "units")
        self.use_bias = check_bool(use_bias, "use_bias")
        self.kernel_initializer = initializers.check(kernel_initializer)
        self.bias_initializer = initializers.check(bias_initializer)
        self._x2: Optional[np.ndarray] = None

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (*input_shape[:-1], self.units)

    def weight_specs(self, input_shape: Shape) -> WeightSpecs:
        params = {"kernel": WeightSpec((input_shape[-1], self.units), self.kernel_initializer)}
        if self.use_bias:
            params["bias"] = WeightSpec((self.units,), self.bias_initializer)
        return {"params": params, "state": {}}

    def affine_forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        x2 = np.ascontiguousarray(x.reshape(-1, x.shape[-1]))
        self._x2 = x2
        z = resolve(self.backend).dense_forward(
            x2, self.params["kernel"], self.params.get("bias"),
            self.buffer("z", (x2.shape[0], self.units), x2.dtype),
        )
        return z.reshape(*x.shape[:-1], self.units)

    def affine_backward(self, dz: np.ndarray) -> Optional[np.ndarray]:
        x2 = self._x2
        dx = self.buffer("dx", x2.shape, x2.dtype) if self.input_grad_needed else None
        dx, dw, db = resolve(self.backend).dense_backward(
            np.ascontiguousarray(dz).reshape(-1, self.units), x2, self.params["kernel"],
            self.input_grad_needed, dx,
        )
        self.grads["kernel"] = dw
        if self.use_bias:
            self.grads["bias"] = db
        return None if dx is None else dx.reshape(*dz.shape[:-1], dx.shape[-1])

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "units": self.units,
            "use_bias": self.use_bias,
            "kernel_initializer": self.kernel_initializer,
            "bias_initializer": self.bias_initializer,
        }


class Activation(ActivatedLayer):
    """An activation as a layer: ``Activation("relu")``, ``Activation("leaky_relu", alpha=0.2)``
    (extra keyword arguments go to the activation)."""

    def __init__(self, activation: Any = "linear", name: Optional[str] = None,
                 input_shape: Any = None, trainable: bool = True, **activation_kwargs: Any):
        if activation_kwargs:
            if not isinstance(activation, str):
                raise ValueError(f"unexpected arguments {sorted(activation_kwargs)} for an "
                                 f"activation given as {activation!r}")
            activation = {"name": activation, **activation_kwargs}
        super().__init__(activation=activation, name=name, input_shape=input_shape,
                         trainable=trainable)


class Dropout(Layer):
    """Inverted dropout: in training each value is zeroed with probability ``rate`` and the kept
    ones are scaled by ``1 / (1 - rate)``, so inference is the identity.

    ``seed`` fixes the mask sequence; without it the masks come from the model's seed.
    The generator is the public attribute ``rng`` (a ``numpy.random.Generator``).
    """

    def __init__(self, rate: float = 0.5, seed: Optional[int] = None, **kwargs: Any):
        super().__init__(**kwargs)
        rate = check_float(rate, "rate")
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"Dropout rate must be in [0, 1); received rate={rate}")
        self.rate = rate
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                                 or seed < 0):
            raise ValueError(f"Dropout seed must be an int >= 0 or None; received seed={seed!r}")
        self.seed = None if seed is None else int(seed)
        self.rng: Optional[np.random.Generator] = None
        self._mask: Optional[np.ndarray] = None

    def create_weights(self, input_shape: Shape, rng: np.random.Generator) -> None:
        self.rng = np.random.default_rng(self.seed) if self.seed is not None else rng

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        if not training or self.rate == 0.0:
            self._mask = None
            return x
        mask = self.rng.random(x.shape, dtype=x.dtype, out=self.buffer("mask", x.shape, x.dtype))
        np.greater_equal(mask, self.rate, out=mask)  # 1 where kept, 0 where dropped
        mask *= x.dtype.type(1.0 / (1.0 - self.rate))
        self._mask = mask
        return np.multiply(x, mask, out=self.buffer("y", x.shape, x.dtype))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if self._mask is None:
            return dy
        return np.multiply(dy, self._mask, out=self.buffer("dx", dy.shape, dy.dtype))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
