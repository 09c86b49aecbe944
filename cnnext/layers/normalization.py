"""Batch normalisation over the last (channel/feature) axis."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .base import Layer, Shape, WeightSpec, WeightSpecs, check_float


class BatchNormalization(Layer):
    """``y = gamma * (x - mean) / sqrt(var + epsilon) + beta`` per channel (last axis), for
    ``(N, H, W, C)`` feature maps and ``(N, D)`` features alike.

    Training uses the batch statistics over every axis but the last and updates
    ``moving = momentum * moving + (1 - momentum) * batch`` (Keras convention; PyTorch's
    ``momentum`` is ``1 - momentum``). ``moving_variance`` tracks the biased batch variance, as in
    Keras (PyTorch tracks the unbiased one). Inference uses the moving statistics.
    Weights: params ``gamma``, ``beta``; state ``moving_mean``, ``moving_variance``.
    """

    def __init__(self, momentum: float = 0.99, epsilon: float = 1e-3, **kwargs: Any):
        super().__init__(**kwargs)
        self.momentum = check_float(momentum, "momentum")
        self.epsilon = check_float(epsilon, "epsilon")
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1]; received momentum={momentum}")
        if not 0.0 < self.epsilon < np.inf:
            raise ValueError(f"epsilon must be a finite number > 0; received epsilon={epsilon}")
        self._xhat: Optional[np.ndarray] = None
        self._inv_std: Optional[np.ndarray] = None
        self._training = False

    def weight_specs(self, input_shape: Shape) -> WeightSpecs:
        c = (input_shape[-1],)
        return {"params": {"gamma": WeightSpec(c, "ones"), "beta": WeightSpec(c, "zeros")},
                "state": {"moving_mean": WeightSpec(c, "zeros"),
                          "moving_variance": WeightSpec(c, "ones")}}

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        x2 = x.reshape(-1, x.shape[-1])
        gamma, beta = self.params["gamma"], self.params["beta"]
        training = training and self.trainable
        self._training = training
        if training:
            mean = x2.mean(axis=0)
            centred = x2 - mean
            var = np.mean(centred * centred, axis=0)
            inv_std = 1.0 / np.sqrt(var + self.epsilon)
            xhat = centred * inv_std
            for key, batch in (("moving_mean", mean), ("moving_variance", var)):
                moving = self.state[key]
                moving *= self.momentum
                moving += (1.0 - self.momentum) * batch
        else:
            inv_std = 1.0 / np.sqrt(self.state["moving_variance"] + self.epsilon)
            xhat = (x2 - self.state["moving_mean"]) * inv_std
        self._inv_std, self._xhat = inv_std, xhat  # for backward; locals keep threads apart
        y = xhat * gamma
        y += beta
        return y.reshape(x.shape)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dy2 = dy.reshape(-1, dy.shape[-1])
        gamma = self.params["gamma"]
        dbeta = dy2.sum(axis=0)
        dgamma = np.sum(dy2 * self._xhat, axis=0)
        self.grads["gamma"], self.grads["beta"] = dgamma, dbeta
        if not self._training:  # the moving statistics are constants
            return (dy2 * (gamma * self._inv_std)).reshape(dy.shape)
        m = dy2.shape[0]
        dx = (dy2 - dbeta / m - self._xhat * (dgamma / m)) * (gamma * self._inv_std)
        return dx.reshape(dy.shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "momentum": self.momentum, "epsilon": self.epsilon}
