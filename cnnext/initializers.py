"""Weight initializers: ``init(shape, rng, dtype) -> array``.

Fans follow Keras: for a dense kernel ``(D, U)`` ``fan_in = D`` and ``fan_out = U``; for a conv
kernel ``(KH, KW, C, F)`` ``fan_in = KH*KW*C`` and ``fan_out = KH*KW*F``.

- ``glorot_uniform``: U(-l, l) with ``l = sqrt(6 / (fan_in + fan_out))``
- ``glorot_normal``: N(0, s^2) with ``s = sqrt(2 / (fan_in + fan_out))``
- ``he_uniform``: U(-l, l) with ``l = sqrt(6 / fan_in)``
- ``he_normal``: N(0, s^2) with ``s = sqrt(2 / fan_in)``
- ``zeros``, ``ones``

The normal variants are plain (not truncated) normals. ``rng`` is a ``numpy.random.Generator``;
the same generator state gives the same weights.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

Initializer = Callable[[tuple, np.random.Generator, np.dtype], np.ndarray]


def fans(shape: tuple) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a kernel of ``shape`` (1-D shapes: both equal the length)."""
    if len(shape) < 2:
        n = int(shape[0]) if shape else 1
        return n, n
    receptive = math.prod(shape[:-2])
    return receptive * shape[-2], receptive * shape[-1]


def _uniform(limit: float, shape, rng, dtype) -> np.ndarray:
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


def _normal(std: float, shape, rng, dtype) -> np.ndarray:
    return (rng.standard_normal(size=shape) * std).astype(dtype)


def glorot_uniform(shape, rng, dtype) -> np.ndarray:
    fan_in, fan_out = fans(shape)
    return _uniform(math.sqrt(6.0 / (fan_in + fan_out)), shape, rng, dtype)


def glorot_normal(shape, rng, dtype) -> np.ndarray:
    fan_in, fan_out = fans(shape)
    return _normal(math.sqrt(2.0 / (fan_in + fan_out)), shape, rng, dtype)


def he_uniform(shape, rng, dtype) -> np.ndarray:
    return _uniform(math.sqrt(6.0 / fans(shape)[0]), shape, rng, dtype)


def he_normal(shape, rng, dtype) -> np.ndarray:
    return _normal(math.sqrt(2.0 / fans(shape)[0]), shape, rng, dtype)


def zeros(shape, rng, dtype) -> np.ndarray:
    return np.zeros(shape, dtype=dtype)


def ones(shape, rng, dtype) -> np.ndarray:
    return np.ones(shape, dtype=dtype)


INITIALIZERS: dict[str, Initializer] = {
    f.__name__: f for f in (glorot_uniform, glorot_normal, he_uniform, he_normal, zeros, ones)
}


def check(name: str) -> str:
    """Validate an initializer name (case-insensitive) and return its canonical form."""
    key = name.lower() if isinstance(name, str) else name
    if key not in INITIALIZERS:
        raise ValueError(f"unknown initializer {name!r}; expected one of {sorted(INITIALIZERS)}")
    return key


def get(name: str) -> Initializer:
    """The initializer function called ``name``."""
    return INITIALIZERS[check(name)]
