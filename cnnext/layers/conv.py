"""2-D convolution layer (channels-last): ``(N, H, W, C) -> (N, Ho, Wo, filters)``."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .. import activations, initializers
from .._checks import check_bool, check_positive_int
from ..backend import resolve
from ..shapes import (
    check_padding,
    clamped_stride,
    conv_output_hw,
    dilated_kernel_hw,
    padded_hw,
    resolve_padding,
    to_pair,
)
from .base import ActivatedLayer, Shape, WeightSpec, WeightSpecs, check_spatial_input


class Conv2D(ActivatedLayer):
    """``y = activation(conv(x, kernel) + bias)`` with a kernel of shape ``(KH, KW, C, filters)``.

    ``padding`` is ``"valid"`` (none), ``"same"`` (TensorFlow/Keras rule: ``ceil(H / stride)``
    output rows, an odd padding total puts the extra row at the bottom), an int, or ``(ph, pw)``;
    padded cells are zeros. ``strides`` and ``dilation_rate`` are ints or ``(h, w)`` pairs.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: Any,
        strides: Any = 1,
        padding: Any = "valid",
        dilation_rate: Any = 1,
        activation: Any = None,
        use_bias: bool = True,
        kernel_initializer: str = "glorot_uniform",
        bias_initializer: str = "zeros",
        **kwargs: Any,
    ):
        super().__init__(activation=activation, **kwargs)
        self.filters = check_positive_int(filters, "filters")
        self.kernel_size = to_pair(kernel_size, "kernel_size")
        self.strides = to_pair(strides, "strides")
        self.dilation_rate = to_pair(dilation_rate, "dilation_rate")
        self.padding = check_padding(padding)
        self.use_bias = check_bool(use_bias, "use_bias")
        self.kernel_initializer = initializers.check(kernel_initializer)
        self.bias_initializer = initializers.check(bias_initializer)
        self.pads: Optional[tuple[int, int, int, int]] = None
        self._kernel_strides = self.strides  # clamped by build (same output, sane buffers)
        self._x: Optional[np.ndarray] = None

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        check_spatial_input(self, input_shape)
        in_hw = input_shape[:2]
        pads = resolve_padding(self.padding, in_hw, self.kernel_size, self.strides,
                               self.dilation_rate)
        span, room = dilated_kernel_hw(self.kernel_size, self.dilation_rate), padded_hw(in_hw, pads)
        if span[0] > room[0] or span[1] > room[1]:
            raise self._error(
                f"kernel {self.kernel_size} with dilation {self.dilation_rate} spans {span} cells, "
                f"larger than its padded input {room} (input shape {input_shape})"
            )
        self.pads = pads
        self._kernel_strides = clamped_stride(in_hw, pads, span, self.strides)
        return (*conv_output_hw(in_hw, self.kernel_size, self.strides, pads, self.dilation_rate),
                self.filters)

    def weight_specs(self, input_shape: Shape) -> WeightSpecs:
        shape = (*self.kernel_size, input_shape[2], self.filters)
        params = {"kernel": WeightSpec(shape, self.kernel_initializer)}
        if self.use_bias:
            params["bias"] = WeightSpec((self.filters,), self.bias_initializer)
        return {"params": params, "state": {}}

    def forward_fused_relu(self, x: np.ndarray) -> np.ndarray:
        """Inference forward pass of a layer whose activation is ReLU, the ReLU applied inside the
        convolution: the values of :meth:`forward` without a second pass over the output. Keeps
        no pre-activation (``preactivation`` is None), so :meth:`backward` cannot follow."""
        if type(self.activation) is not activations.ReLU:
            raise self._error(f"forward_fused_relu needs a ReLU activation, not "
                              f"{self.activation.name!r}")
        self.preactivation = self._output = None
        return self._convolve(x, "y", relu=True)

    def affine_forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        return self._convolve(x, "z", relu=False)

    def _convolve(self, x: np.ndarray, name: str, relu: bool) -> np.ndarray:
        """The convolution of ``x`` (ReLU applied with ``relu``) into workspace array ``name``."""
        self._x = x
        out = self.buffer(name, (x.shape[0], *self.output_shape), x.dtype)
        return resolve(self.backend).conv2d_forward(
            x, self.params["kernel"], self.params.get("bias"), self._kernel_strides, self.pads,
            self.dilation_rate, out, relu,
        )

    def affine_backward(self, dz: np.ndarray) -> Optional[np.ndarray]:
        x = self._x
        dx = self.buffer("dx", x.shape, x.dtype) if self.input_grad_needed else None
        dx, dw, db = resolve(self.backend).conv2d_backward(
            np.ascontiguousarray(dz), x, self.params["kernel"], self._kernel_strides,
            self.pads, self.dilation_rate, self.input_grad_needed, dx,
        )
        self.grads["kernel"] = dw
        if self.use_bias:
            self.grads["bias"] = db
        return dx

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": list(self.kernel_size),
            "strides": list(self.strides),
            "padding": self.padding if isinstance(self.padding, str) else list(self.padding),
            "dilation_rate": list(self.dilation_rate),
            "use_bias": self.use_bias,
            "kernel_initializer": self.kernel_initializer,
            "bias_initializer": self.bias_initializer,
        }
