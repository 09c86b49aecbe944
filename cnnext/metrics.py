"""Metrics: per-batch means that the model averages over an epoch, weighted by batch size.

Metrics receive the targets prepared by the loss (class ids, one-hot rows or raw values) and the
model output. ``"loss"`` may be listed in ``metrics`` for Keras compatibility; the loss is always
reported anyway.
"""
from __future__ import annotations

from typing import Union

import numpy as np


class Metric:
    name = "metric"

    def __call__(self, t: np.ndarray, p: np.ndarray) -> float:
        raise NotImplementedError


class Accuracy(Metric):
    """Fraction of correct predictions.

    - integer class ids (class axis dropped): ``argmax(p) == t``;
    - one-hot rows with >= 2 classes: ``argmax(p) == argmax(t)``;
    - a single output unit (binary): ``(p > threshold) == (t > 0.5)``. ``threshold`` is 0.5 for
      probabilities; a model whose loss takes logits uses a copy with threshold 0.
    """

    name = "accuracy"

    def __init__(self, threshold: float = 0.5):
        self.threshold = float(threshold)

    def __call__(self, t: np.ndarray, p: np.ndarray) -> float:
        if t.ndim < p.ndim:
            return float(np.mean(p.argmax(axis=-1) == t))
        if p.shape[-1] == 1:
            return float(np.mean((p > self.threshold) == (t > 0.5)))
        return float(np.mean(p.argmax(axis=-1) == t.argmax(axis=-1)))


class MeanSquaredError(Metric):
    """``mean((p - t)^2)``; integer class ids are compared as one-hot rows."""

    name = "mse"

    def __call__(self, t: np.ndarray, p: np.ndarray) -> float:
        if t.ndim < p.ndim:
            t = np.eye(p.shape[-1], dtype=p.dtype)[t]
        d = p - t
        return float(np.vdot(d, d)) / d.size


METRICS: dict[str, type[Metric]] = {"accuracy": Accuracy, "mse": MeanSquaredError}
ALIASES = {"acc": "accuracy", "mean_squared_error": "mse"}


def get(spec: Union[str, Metric]) -> Metric:
    """A metric from a name (``"accuracy"``/``"acc"``, ``"mse"``) or an instance."""
    if isinstance(spec, Metric):
        return spec
    key = spec.lower() if isinstance(spec, str) else spec
    key = ALIASES.get(key, key)
    if key not in METRICS:
        raise ValueError(
            f"unknown metric {spec!r}; expected one of {sorted([*METRICS, *ALIASES, 'loss'])}"
        )
    return METRICS[key]()
