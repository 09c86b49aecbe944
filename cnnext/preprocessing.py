"""Preprocessing helpers: scaling, normalisation, one-hot labels, splits and mini-batches.

Images are ``(N, H, W, C)``; labels are ``(N,)`` integer class ids or ``(N, K)`` one-hot rows.
"""
from __future__ import annotations

from typing import Iterator, Optional, Tuple

import numpy as np


def to_float(x: np.ndarray, scale: float = 1.0 / 255.0, dtype: np.dtype = np.float32) -> np.ndarray:
    """``x * scale`` as a new float array (default: uint8 0..255 -> float32 0..1), any shape."""
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"to_float needs a floating dtype, got {dtype}")
    return np.multiply(np.asarray(x), scale, dtype=dtype)


def normalize(
    x: np.ndarray, mean: Optional[float] = None, std: Optional[float] = None
) -> Tuple[np.ndarray, float, float]:
    """``(x - mean) / std`` over the whole array (a float array, any shape).

    ``mean``/``std`` default to the statistics of ``x``: compute them on the training set and pass
    the returned values when normalising the test set. Returns ``(x_normalised, mean, std)``.
    """
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"normalize needs a float array (see to_float), got {x.dtype}")
    mean = float(x.mean(dtype=np.float64)) if mean is None else float(mean)
    std = float(x.std(dtype=np.float64)) if std is None else float(std)
    if not std > 0:
        raise ValueError(f"normalize needs std > 0, got {std}")
    return ((x - x.dtype.type(mean)) / x.dtype.type(std)).astype(x.dtype, copy=False), mean, std


def one_hot(y: np.ndarray, num_classes: int, dtype: np.dtype = np.float32) -> np.ndarray:
    """Class ids ``(N,)`` in ``0..num_classes-1`` -> one-hot rows ``(N, num_classes)``."""
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise ValueError(f"one_hot expects a 1-D integer array, got {y.dtype} {y.shape}")
    if num_classes < 1:
        raise ValueError(f"one_hot expects num_classes >= 1, got {num_classes}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"one_hot: labels must lie in 0..{num_classes - 1}, got {y.min()}..{y.max()}")
    out = np.zeros((y.size, num_classes), dtype=dtype)
    out[np.arange(y.size), y] = 1
    return out


def _check_pair(x: np.ndarray, y: np.ndarray) -> None:
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")


def train_val_split(
    x: np.ndarray, y: np.ndarray, val_fraction: float = 0.1, seed: Optional[int] = None
) -> Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]:
    """Shuffle and split into ``((x_train, y_train), (x_val, y_val))``.

    ``val_fraction`` in ``[0, 1)`` of the samples (rounded) goes to validation; ValueError when
    that leaves either part empty (0 asks for no validation).
    """
    _check_pair(x, y)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = int(round(len(x) * val_fraction))
    if n_val == len(x) or (val_fraction > 0 and n_val == 0):
        raise ValueError(f"val_fraction={val_fraction} of {len(x)} samples leaves no training or "
                         "no validation samples")
    val, train = order[:n_val], order[n_val:]
    return (x[train], y[train]), (x[val], y[val])


def batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    shuffle: bool = True,
    seed: Optional[int] = None,
) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Yield ``(x_batch, y_batch)`` of ``batch_size`` samples (the last one may be smaller).

    With ``shuffle`` the order is a permutation drawn from ``seed``; every sample appears once.
    """
    _check_pair(x, y)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.random.default_rng(seed).permutation(len(x)) if shuffle else np.arange(len(x))
    slices = (order[start:start + batch_size] for start in range(0, len(x), batch_size))
    return ((x[index], y[index]) for index in slices)
