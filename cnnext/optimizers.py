"""Optimizers whose update rules match ``torch.optim`` (SGD, Adam, AdamW, RMSprop).

An optimizer updates parameters in place from ``(key, param, grad)`` triples, ``key`` being a
stable name such as ``"conv2d.kernel"``. Per-parameter slots (momentum buffers, moments) are
created on first use and exposed, with the update count, by :meth:`Optimizer.get_state` /
:meth:`Optimizer.set_state` as ``{"iterations": array(t), "<slot>:<key>": array}``.

``learning_rate`` is a float or a :mod:`cnnext.schedules` schedule, evaluated at the number of
updates made before the current one.

The update rules are ops of the backend table (``sgd_update``, ``adam_update``,
``rmsprop_update``): the compiled ones make one pass over each parameter, its gradient and its
slots, where the NumPy twins make several. A parameter that is not a C-contiguous float32/float64
array (or whose slots are not of its dtype) goes through the NumPy twin, which takes any strides.

Slot values below the dtype's smallest normal number are stored as zero (NaN stays NaN), so that
the state of units without gradient decays to zero instead of sticking at subnormal values, which
make every later update of them about a hundred times slower. Otherwise the rules are exactly
``torch.optim``'s.
"""
from __future__ import annotations

import math
import weakref
from typing import Any, Iterable, Optional, Union

import numpy as np

from . import schedules
from ._checks import check_bool
from .backend import BACKENDS, resolve
from .schedules import LearningRate, LearningRateSchedule

ParamTriple = tuple[str, np.ndarray, np.ndarray]


def _non_negative(value: Any, name: str) -> float:
    value = float(value)
    if not 0 <= value < math.inf:
        raise ValueError(f"{name} must be a finite number >= 0; received {name}={value}")
    return value


def _beta(value: Any, name: str) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1); received {name}={value}")
    return value


def _iterations(value: Any) -> int:
    """A saved update count: an integer >= 0 (a scalar array or a Python int)."""
    value = np.asarray(value)
    if value.shape != () or value.dtype.kind not in "iu" or value < 0:
        raise ValueError(f"optimizer state 'iterations' must be an integer >= 0; "
                         f"received {value!r}")
    return int(value)


class Optimizer:
    _model: Optional[weakref.ref] = None  # the model compiled with it (see attach)

    def __init__(self, learning_rate: LearningRate, weight_decay: float = 0.0):
        self.learning_rate = learning_rate
        self.weight_decay = _non_negative(weight_decay, "weight_decay")
        self.iterations = 0
        self.slots: dict[str, dict[str, np.ndarray]] = {}
        self._backend: Optional[str] = None  # the backend of the current apply()

    @property
    def attached(self) -> bool:
        """Whether a model has been compiled with this optimizer."""
        return self._model is not None

    def attach(self, model: Any) -> None:
        """Called by ``model.compile``. Slots are keyed by parameter name, so an optimizer that
        another model still uses, or has trained, would hand that model's momentum and update
        count to this one: ValueError instead."""
        previous = None if self._model is None else self._model()
        in_use = previous is not None and previous is not model and previous.optimizer is self
        if in_use or (self._model is not None and previous is not model
                      and (self.iterations or self.slots)):
            kind = type(self).__name__
            whose = (f"is already compiled into model '{previous.name}'" if in_use
                     else f"holds {self.iterations} updates of state from another model")
            raise ValueError(f"this {kind} optimizer {whose}; compile each model with its own "
                             f"optimizer, e.g. {kind}.from_config(optimizer.get_config())")
        self._model = weakref.ref(model)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled and copied without the model link; a copied or unpickled model attaches its
        copy of the optimizer again (``Sequential.__setstate__``)."""
        return {**vars(self), "_model": None}

    @property
    def learning_rate(self) -> LearningRate:
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value: LearningRate) -> None:
        if not isinstance(value, LearningRateSchedule):  # 0 is allowed (a warm-up's start)
            value = _non_negative(value, "learning_rate")
        self._learning_rate = value

    def current_learning_rate(self) -> float:
        """The rate the next update uses."""
        lr = self._learning_rate
        return float(lr(self.iterations)) if isinstance(lr, LearningRateSchedule) else lr

    def _slot(self, slot: str, key: str, like: np.ndarray) -> np.ndarray:
        buffers = self.slots.setdefault(slot, {})
        buf = buffers.get(key)
        if buf is None:
            buf = buffers[key] = np.zeros_like(like)
        elif buf.shape != like.shape:
            raise ValueError(f"optimizer slot {slot}:{key} has shape {buf.shape}, "
                             f"parameter has shape {like.shape}")
        return buf

    def apply(self, triples: Iterable[ParamTriple], backend: Optional[str] = None) -> None:
        """One update of every ``param`` (in place) from its ``grad``, with the update op of
        ``backend`` (default: the current backend)."""
        lr = self.current_learning_rate()
        self.iterations += 1
        self._backend = backend
        for key, param, grad in triples:
            self.update(key, param, grad, lr)

    def update(self, key: str, param: np.ndarray, grad: np.ndarray, lr: float) -> None:
        """One update of ``param`` with the backend of the current :meth:`apply`."""
        raise NotImplementedError

    def _operands(self, param: np.ndarray, grad: np.ndarray,
                  *slots: Optional[np.ndarray]) -> tuple[Any, np.ndarray]:
        """``(kernels, grad)`` as the update op takes them: ``grad`` in ``param``'s float dtype
        on either backend (so both compute in that precision); the compiled ops also need one
        C-contiguous dtype and shape for all arrays, anything else goes through the NumPy twin."""
        kernels = resolve(self._backend)
        if param.dtype.char in "fd":
            grad = np.asarray(grad, dtype=param.dtype)
        if kernels is BACKENDS["numpy"]:
            return kernels, grad
        if not (param.dtype.char in "fd" and param.flags.c_contiguous and param.flags.writeable
                and np.shape(grad) == param.shape
                and all(s is None or (s.dtype == param.dtype and s.flags.c_contiguous)
                        for s in slots)):
            return BACKENDS["numpy"], grad
        return kernels, np.ascontiguousarray(grad)

    # --- serialisation --------------------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        lr = self._learning_rate
        return {
            "learning_rate": schedules.serialize(lr) if isinstance(lr, LearningRateSchedule)
            else lr,
            "weight_decay": self.weight_decay,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Optimizer":
        config = dict(config)
        if isinstance(config.get("learning_rate"), dict):
            config["learning_rate"] = schedules.deserialize(config["learning_rate"])
        return cls(**config)

    def get_state(self) -> dict[str, np.ndarray]:
        state = {"iterations": np.array(self.iterations, dtype=np.int64)}
        for slot in sorted(self.slots):
            for key in sorted(self.slots[slot]):
                state[f"{slot}:{key}"] = self.slots[slot][key].copy()
        return state

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        if "iterations" not in state:
            raise ValueError("optimizer state lacks 'iterations'")
        slots: dict[str, dict[str, np.ndarray]] = {}
        for name, value in state.items():
            if name == "iterations":
                continue
            slot, sep, key = name.partition(":")
            if not sep:
                raise ValueError(f"bad optimizer state entry {name!r} (expected 'slot:key')")
            slots.setdefault(slot, {})[key] = np.array(value, copy=True)
        self.iterations = _iterations(state["iterations"])
        self.slots = slots

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """``torch.optim.SGD`` (dampening 0): ``g += weight_decay * p``; with momentum
    ``b = momentum * b + g`` and ``g = b`` (or ``g + momentum * b`` with Nesterov); ``p -= lr * g``.
    """

    def __init__(self, learning_rate: LearningRate = 0.01, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0):
        super().__init__(learning_rate, weight_decay)
        self.momentum = _beta(momentum, "momentum")
        self.nesterov = check_bool(nesterov, "nesterov")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")

    def update(self, key: str, param: np.ndarray, grad: np.ndarray, lr: float) -> None:
        buf = self._slot("momentum", key, param) if self.momentum else None
        kernels, grad = self._operands(param, grad, buf)
        kernels.sgd_update(param, grad, buf, lr, self.momentum, self.nesterov, self.weight_decay)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """``torch.optim.Adam``: ``weight_decay`` is an L2 term added to the gradient;
    ``m, v`` moving moments; ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``."""

    decoupled = False

    def __init__(self, learning_rate: LearningRate = 0.001, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(learning_rate, weight_decay)
        self.beta_1 = _beta(beta_1, "beta_1")
        self.beta_2 = _beta(beta_2, "beta_2")
        self.epsilon = _non_negative(epsilon, "epsilon")

    def update(self, key: str, param: np.ndarray, grad: np.ndarray, lr: float) -> None:
        m = self._slot("m", key, param)
        v = self._slot("v", key, param)
        kernels, grad = self._operands(param, grad, m, v)
        kernels.adam_update(param, grad, m, v, lr, self.beta_1, self.beta_2, self.epsilon,
                            self.weight_decay, self.decoupled, self.iterations)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon}


class AdamW(Adam):
    """``torch.optim.AdamW``: Adam with decoupled decay ``p *= 1 - lr * weight_decay`` before the
    Adam step (default ``weight_decay`` 0.01)."""

    decoupled = True

    def __init__(self, learning_rate: LearningRate = 0.001, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-8, weight_decay: float = 0.01):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, weight_decay)


class RMSprop(Optimizer):
    """``torch.optim.RMSprop`` with ``alpha = rho``: ``s = rho s + (1 - rho) g^2``;
    ``a = sqrt(s - c^2) + eps`` when ``centered`` (``c`` the moving mean of ``g``) else
    ``sqrt(s) + eps``; ``p -= lr * g / a``, or through a momentum buffer ``b = momentum b + g / a``.
    """

    def __init__(self, learning_rate: LearningRate = 0.001, rho: float = 0.9,
                 momentum: float = 0.0, epsilon: float = 1e-8, centered: bool = False,
                 weight_decay: float = 0.0):
        super().__init__(learning_rate, weight_decay)
        self.rho = _beta(rho, "rho")
        self.momentum = _beta(momentum, "momentum")
        self.epsilon = _non_negative(epsilon, "epsilon")
        self.centered = check_bool(centered, "centered")

    def update(self, key: str, param: np.ndarray, grad: np.ndarray, lr: float) -> None:
        square = self._slot("square_avg", key, param)
        mean = self._slot("grad_avg", key, param) if self.centered else None
        buf = self._slot("momentum", key, param) if self.momentum else None
        kernels, grad = self._operands(param, grad, square, mean, buf)
        kernels.rmsprop_update(param, grad, square, mean, buf, lr, self.rho, self.momentum,
                               self.epsilon, self.weight_decay)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum,
                "epsilon": self.epsilon, "centered": self.centered}


OPTIMIZERS = {cls.__name__.lower(): cls for cls in (SGD, Adam, AdamW, RMSprop)}
CLASSES = {cls.__name__: cls for cls in OPTIMIZERS.values()}


def get(spec: Union[str, Optimizer, dict[str, Any]]) -> Optimizer:
    """An optimizer from a name (``"sgd"``, ``"adam"``, ``"adamw"``, ``"rmsprop"``; default
    hyper-parameters), an instance, or a ``{"class_name", "config"}`` dict from :func:`serialize`.
    """
    if isinstance(spec, Optimizer):
        return spec
    if isinstance(spec, dict):
        cls = CLASSES.get(spec.get("class_name"))
        if cls is None:
            raise ValueError(f"unknown optimizer class {spec.get('class_name')!r}; "
                             f"expected one of {sorted(CLASSES)}")
        return cls.from_config(spec.get("config", {}))
    key = spec.lower() if isinstance(spec, str) else spec
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {spec!r}; expected one of {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[key]()


def serialize(optimizer: Optimizer) -> dict[str, Any]:
    return {"class_name": type(optimizer).__name__, "config": optimizer.get_config()}
