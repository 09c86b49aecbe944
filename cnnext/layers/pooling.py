"""2-D pooling layers (channels-last): ``(N, H, W, C) -> (N, Ho, Wo, C)``."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..backend import resolve
from ..shapes import check_padding, padded_hw, pool_output_hw, resolve_padding, to_pair
from .base import Layer, Shape, check_spatial_input

KINDS = {"max": "max", "min": "min", "avg": "avg", "average": "avg", "mean": "avg"}


class Pool2D(Layer):
    """Max, min or average pooling over ``pool_size`` windows.

    ``strides=None`` means ``pool_size`` (non-overlapping windows). ``padding`` is ``"valid"``,
    ``"same"`` (``ceil(H / stride)`` output rows) or an int / ``(ph, pw)`` smaller than the window.
    Padded cells never win a max/min and are not counted by the average. ``kind`` is ``"max"``,
    ``"min"`` or ``"avg"`` (``"average"`` accepted).
    """

    def __init__(
        self,
        pool_size: Any = 2,
        strides: Any = None,
        padding: Any = "valid",
        kind: str = "max",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.pool_size = to_pair(pool_size, "pool_size")
        self.strides = self.pool_size if strides is None else to_pair(strides, "strides")
        self.padding = check_padding(padding)
        key = kind.lower() if isinstance(kind, str) else kind
        if key not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}; received kind={kind!r}")
        self.mode = KINDS[key]
        self.pads: Optional[tuple[int, int, int, int]] = None
        self._x: Optional[np.ndarray] = None
        self._relu = False

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        check_spatial_input(self, input_shape)
        in_hw = input_shape[:2]
        pads = resolve_padding(self.padding, in_hw, self.pool_size, self.strides)
        if max(pads[:2]) >= self.pool_size[0] or max(pads[2:]) >= self.pool_size[1]:
            raise self._error(f"padding {pads} must be smaller than pool_size {self.pool_size}")
        room = padded_hw(in_hw, pads)
        if self.pool_size[0] > room[0] or self.pool_size[1] > room[1]:
            raise self._error(
                f"pool_size {self.pool_size} is larger than its padded input {room} "
                f"(input shape {input_shape})"
            )
        self.pads = pads
        return (*pool_output_hw(in_hw, self.pool_size, self.strides, pads), input_shape[2])

    def forward(self, x: np.ndarray, training: bool = False, relu: bool = False) -> np.ndarray:
        """``relu`` (max and min pooling): return ``relu(pool(x))``, and make :meth:`backward`
        its gradient (a model fuses the ReLU of the layer before into the pooling this way)."""
        self._x, self._relu = x, relu
        y = self.buffer("y", (x.shape[0], *self.output_shape), x.dtype)
        return resolve(self.backend).pool2d_forward(
            x, self.pool_size, self.strides, self.pads, self.mode, y, relu
        )

    def backward(self, dy: np.ndarray) -> np.ndarray:
        x = self._x
        return resolve(self.backend).pool2d_backward(
            np.ascontiguousarray(dy), x, self.pool_size, self.strides, self.pads, self.mode,
            self.buffer("dx", x.shape, x.dtype), self._relu,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "pool_size": list(self.pool_size),
            "strides": list(self.strides),
            "padding": self.padding if isinstance(self.padding, str) else list(self.padding),
            "kind": self.mode,
        }


class _FixedKindPool(Pool2D):
    """A :class:`Pool2D` whose ``kind`` is fixed by the subclass."""

    kind = "max"

    def __init__(self, pool_size: Any = 2, strides: Any = None, padding: Any = "valid",
                 **kwargs: Any):
        super().__init__(pool_size, strides, padding, kind=self.kind, **kwargs)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        del config["kind"]
        return config


class MaxPool2D(_FixedKindPool):
    """Max pooling; the gradient goes to the first maximal cell of each window."""

    kind = "max"


class MinPool2D(_FixedKindPool):
    """Min pooling; the gradient goes to the first minimal cell of each window."""

    kind = "min"


class AvgPool2D(_FixedKindPool):
    """Average pooling over the real (unpadded) cells of each window."""

    kind = "avg"
