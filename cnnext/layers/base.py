"""The :class:`Layer` base class and the shared "affine step + activation" machinery.

A layer is built once for an input shape without the batch axis (``(H, W, C)`` or ``(D,)``):
:meth:`Layer.build` validates the shape (a ValueError naming the layer when it cannot work),
records ``input_shape``/``output_shape`` and creates the weights. After that :meth:`forward` and
:meth:`backward` do no validation: they call the backend op table directly on whole mini-batches.

Weights live in three dicts with a fixed key order:
``params`` (trainable, e.g. ``kernel``/``bias``), ``grads`` (same keys, filled by ``backward``) and
``state`` (non-trainable, e.g. BatchNormalization's moving statistics).
"""
from __future__ import annotations

import re
import threading
from typing import Any, NamedTuple, Optional, Sequence

import numpy as np

from .. import activations, initializers
from .._checks import check_bool
from ..workspace import Workspace

Shape = tuple[int, ...]


class WeightSpec(NamedTuple):
    """The shape of one weight array and the name of the initializer that creates it."""

    shape: Shape
    initializer: str


# {"params": {key: spec}, "state": {key: spec}}, each dict in the layer's fixed key order.
WeightSpecs = dict[str, dict[str, WeightSpec]]


def _snake_case(name: str) -> str:
    """``"BatchNormalization"`` -> ``"batch_normalization"``, ``"Conv2D"`` -> ``"conv2d"``."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", name).lower()


def check_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number; received {name}={value!r}")
    return float(value)


def check_spatial_input(layer: "Layer", input_shape: Shape) -> None:
    """ValueError naming ``layer`` unless ``input_shape`` is ``(H, W, C)``."""
    if len(input_shape) != 3:
        raise layer._error(
            f"expects inputs of shape (H, W, C) (batch axis excluded), received {input_shape}"
        )


class Layer:
    """Base class. Subclasses override :meth:`compute_output_shape`, :meth:`forward`,
    :meth:`backward`, and, when they hold weights, :meth:`weight_specs` and :meth:`get_config`.

    ``input_shape`` (optional, without the batch axis) declares the model input when the layer is
    the first one of a :class:`~cnnext.models.Sequential`. ``dtype``, ``backend`` (None: the
    current default backend) and ``seed_sequence`` (a ``numpy.random.SeedSequence`` that makes the
    initial weights reproducible) are set by the model before it builds the layer.

    ``input_grad_needed`` is cleared by the model on its first layer with weights: nothing
    upstream uses that layer's input gradient, so :meth:`backward` may skip it and return None.

    ``use_workspace`` (switched on by the model around its passes) makes :meth:`forward` and
    :meth:`backward` write their large results into ``workspace`` arrays, reused from one batch to
    the next, instead of new arrays: such a result stays valid until the layer's next pass. Both
    are per thread, so many threads may run one model at once. Direct calls leave it off.
    """

    def __init__(
        self,
        name: Optional[str] = None,
        input_shape: Optional[Sequence[int]] = None,
        trainable: bool = True,
    ):
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"layer name must be a non-empty string; received name={name!r}")
        self.name: str = name or _snake_case(type(self).__name__)
        self.auto_named = name is None
        self.declared_input_shape: Optional[Shape] = (
            None if input_shape is None else self._as_shape(input_shape)
        )
        self.trainable = check_bool(trainable, "trainable")
        self.built = False
        self.input_shape: Optional[Shape] = self.declared_input_shape
        self.output_shape: Optional[Shape] = None
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.state: dict[str, np.ndarray] = {}
        self.dtype = np.dtype("float32")
        self.backend: Optional[str] = None
        self.seed_sequence: Optional[np.random.SeedSequence] = None
        self.input_grad_needed = True
        self._thread = threading.local()  # this thread's workspace and use_workspace

    @staticmethod
    def _as_shape(shape: Sequence[int]) -> Shape:
        try:
            dims = tuple(int(d) for d in shape)
        except (TypeError, ValueError):
            raise ValueError(f"a shape must be a sequence of ints; received {shape!r}") from None
        if not dims or min(dims) < 1 or any(int(d) != d for d in shape):
            raise ValueError(f"a shape needs positive int sizes; received {tuple(shape)!r}")
        return dims

    # --- building -------------------------------------------------------------------------------

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        """Output shape (no batch axis) for ``input_shape``; ValueError when it cannot work."""
        return tuple(input_shape)

    def weight_specs(self, input_shape: Shape) -> WeightSpecs:
        """The weights :meth:`create_weights` makes for ``input_shape``, computed without
        allocating them (layers without weights have none)."""
        return {"params": {}, "state": {}}

    def create_weights(self, input_shape: Shape, rng: np.random.Generator) -> None:
        """Fill ``params``/``state`` as :meth:`weight_specs` describes, in the layer dtype,
        drawing from ``rng`` in key order."""
        for kind, specs in self.weight_specs(input_shape).items():
            setattr(self, kind, {key: initializers.get(init)(shape, rng, self.dtype)
                                 for key, (shape, init) in specs.items()})

    def build(self, input_shape: Sequence[int]) -> None:
        """Validate ``input_shape`` (no batch axis), set the shapes and create the weights."""
        shape = self._as_shape(input_shape)
        if self.built:
            if shape != self.input_shape:
                raise ValueError(
                    f"layer '{self.name}' was built for input shape {self.input_shape} and "
                    f"cannot take {shape}"
                )
            return
        self.output_shape = tuple(self.compute_output_shape(shape))
        self.create_weights(shape, np.random.default_rng(self.seed_sequence))
        self.grads = {key: np.zeros_like(p) for key, p in self.params.items()}
        self.input_shape = shape
        self.built = True

    def unbuild(self) -> None:
        """Undo :meth:`build`: drop the weights and the shapes (a model does this when building
        fails part way, so that the layer can be built again for another input shape)."""
        self.params, self.grads, self.state = {}, {}, {}
        self.input_shape = self.declared_input_shape
        self.output_shape = None
        self.built = False

    def __getstate__(self) -> dict[str, Any]:
        """Copies (``copy.deepcopy``) and pickles leave the per-thread workspaces behind."""
        state = self.__dict__.copy()
        del state["_thread"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._thread = threading.local()

    @property
    def workspace(self) -> Workspace:
        """This thread's workspace of the layer."""
        workspace = getattr(self._thread, "workspace", None)
        if workspace is None:
            workspace = self._thread.workspace = Workspace()
        return workspace

    @property
    def use_workspace(self) -> bool:
        """Whether this thread's passes write into :attr:`workspace`."""
        return getattr(self._thread, "use_workspace", False)

    @use_workspace.setter
    def use_workspace(self, value: bool) -> None:
        self._thread.use_workspace = bool(value)

    def buffer(self, name: str, shape: tuple, dtype) -> Optional[np.ndarray]:
        """The workspace array ``name`` while ``use_workspace`` is on, else None (the op then
        allocates its result)."""
        return self.workspace.array(name, shape, dtype) if self.use_workspace else None

    def _error(self, message: str) -> ValueError:
        return ValueError(f"layer '{self.name}' ({type(self).__name__}): {message}")

    # --- computation ----------------------------------------------------------------------------

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """``x`` of shape ``(N, *input_shape)`` -> ``(N, *output_shape)``."""
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray:
        """Gradient w.r.t. the input of the last :meth:`forward`; fills ``grads``."""
        raise NotImplementedError

    def __call__(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Build from ``x.shape[1:]`` when needed (in ``x``'s dtype when that is float32 or
        float64, else float32), then :meth:`forward` of ``x`` in the layer's dtype (convenience
        for use outside a model)."""
        x = np.asarray(x)
        if x.dtype.kind not in "biuf":
            raise TypeError(f"layer '{self.name}' takes real numbers; received an array of dtype "
                            f"{x.dtype}")
        if not self.built:
            self.dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.dtype(np.float32)
            self.build(x.shape[1:])
        return self.forward(np.ascontiguousarray(x, dtype=self.dtype), training=training)

    # --- weights and config ---------------------------------------------------------------------

    def get_weights(self) -> list[np.ndarray]:
        """Copies of ``params`` then ``state`` values, in their fixed key order."""
        return [w.copy() for w in (*self.params.values(), *self.state.values())]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Copy ``weights`` (as from :meth:`get_weights`) into the layer, in place."""
        targets = [*self.params.items(), *self.state.items()]
        if not self.built:
            raise self._error("build the layer (or its model) before set_weights")
        if len(weights) != len(targets):
            raise self._error(f"expected {len(targets)} weight arrays, received {len(weights)}")
        for (key, target), value in zip(targets, weights):
            value = np.asarray(value)
            if value.shape != target.shape:
                raise self._error(
                    f"weight '{key}' has shape {target.shape}, received shape {value.shape}"
                )
            target[...] = value

    def count_params(self) -> tuple[int, int]:
        """``(trainable, non_trainable)`` scalar counts."""
        n_params = sum(p.size for p in self.params.values())
        n_state = sum(s.size for s in self.state.values())
        return (n_params, n_state) if self.trainable else (0, n_params + n_state)

    def get_config(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments; ``cls.from_config(cfg)`` rebuilds the layer."""
        config: dict[str, Any] = {"name": self.name, "trainable": self.trainable}
        if self.declared_input_shape is not None:
            config["input_shape"] = list(self.declared_input_shape)
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Layer":
        return cls(**config)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} '{self.name}' output_shape={self.output_shape}>"


class ActivatedLayer(Layer):
    """A layer computing ``y = activation(affine(x))``: the affine step (convolution, matrix
    product or identity) then the activation as a second step.

    Subclasses implement :meth:`affine_forward` and :meth:`affine_backward`. The pre-activation of
    the last forward pass is kept in ``preactivation`` so a loss can fuse with the activation
    (softmax + cross-entropy) and call :meth:`backward_preactivation` directly.
    """

    def __init__(self, activation: Any = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.activation = activations.get(activation)
        self._is_linear = self.activation.name == "linear"
        self.preactivation: Optional[np.ndarray] = None
        self._output: Optional[np.ndarray] = None

    def affine_forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        return x

    def affine_backward(self, dz: np.ndarray) -> np.ndarray:
        return dz

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        z = self.affine_forward(x, training)
        self.preactivation = z
        if self._is_linear:
            y = z
        else:
            y = self.activation.forward(z, self.backend, self.buffer("y", z.shape, z.dtype))
        self._output = y
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if not self._is_linear:
            dz = self.buffer("dz", dy.shape, dy.dtype)
            dy = self.activation.backward(dy, self.preactivation, self._output, self.backend, dz)
        return self.affine_backward(dy)

    def forward_preactivation(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Forward pass without the activation: returns ``z`` (kept as ``preactivation``); the
        caller applies the activation (a model does, after a pooling that commutes with it)."""
        z = self.affine_forward(x, training)
        self.preactivation = z
        self._output = None
        return z

    def backward_preactivation(self, dz: np.ndarray) -> np.ndarray:
        """Backward pass given ``dL/dz`` for the pre-activation (skips the activation step)."""
        return self.affine_backward(dz)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "activation": self.activation.get_config()}
