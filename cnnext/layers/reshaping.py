"""Layers that only move values: :class:`Flatten` and nearest-neighbour :class:`UpSample2D`."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..backend import resolve
from ..shapes import to_pair, upsample_output_hw
from .base import Layer, Shape, check_spatial_input


class Flatten(Layer):
    """``(N, *dims) -> (N, prod(dims))`` in C order (channels-last: the channel varies fastest)."""

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (math.prod(input_shape),)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        return x.reshape(x.shape[0], -1)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy.reshape(dy.shape[0], *self.input_shape)


class UpSample2D(Layer):
    """Nearest-neighbour upsampling: ``(N, H, W, C) -> (N, H*sh, W*sw, C)``; ``size`` is an int or
    ``(sh, sw)``. The backward pass sums each ``sh x sw`` block of the output gradient."""

    def __init__(self, size: Any = 2, **kwargs: Any):
        super().__init__(**kwargs)
        self.size = to_pair(size, "size")

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        check_spatial_input(self, input_shape)
        return (*upsample_output_hw(input_shape[:2], self.size), input_shape[2])

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        y = self.buffer("y", (x.shape[0], *self.output_shape), x.dtype)
        return resolve(self.backend).upsample2d_forward(x, self.size, y)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dx = self.buffer("dx", (dy.shape[0], *self.input_shape), dy.dtype)
        return resolve(self.backend).upsample2d_backward(np.ascontiguousarray(dy), self.size, dx)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size": list(self.size)}
