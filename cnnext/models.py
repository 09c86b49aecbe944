"""The :class:`Sequential` model: a stack of layers trained on whole mini-batches.

Inputs are channels-last arrays ``(N, *input_shape)``. At the API boundary (``fit``, ``evaluate``,
``predict``, ``train_on_batch``) the model converts them once to a C-contiguous array of its dtype:
``uint8`` images are scaled by ``1/255`` into ``[0, 1]``; other numeric inputs are cast as given.
Non-finite inputs raise ValueError. Labels are integer class ids or one-hot rows (see
:mod:`cnnext.losses`).
"""
from __future__ import annotations

import copy
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np

from . import activations
from . import losses as losses_mod
from . import metrics as metrics_mod
from . import optimizers as optimizers_mod
from ._config import get_num_threads, single_threaded_blas
from .backend import BACKENDS, resolve
from .callbacks import Callback, History
from .layers import ActivatedLayer, Conv2D, Layer, Pool2D, get_layer_class
from .layers.base import WeightSpecs
from .training import DeferInterrupt, run_epochs, split_validation

DTYPES = ("float32", "float64")


def _logits_accuracy(metric: metrics_mod.Accuracy) -> metrics_mod.Accuracy:
    """A copy of ``metric`` that thresholds logits at 0 (the caller's object is left as it is)."""
    metric = copy.copy(metric)
    metric.threshold = 0.0
    return metric


def _is_model_dtype(dtype: Any) -> bool:
    """``dtype`` names native float32 or float64 ("float32", np.float32, np.dtype("f4")...)."""
    try:
        resolved = np.dtype(dtype) if dtype is not None else None
    except TypeError:
        return False
    return resolved is not None and resolved.isnative and resolved.name in DTYPES


class Sequential:
    """A linear stack of layers.

    ``dtype`` ("float32" or "float64") is the dtype of every weight and activation. ``seed`` makes
    the initial weights, dropout masks and shuffling reproducible (layer ``i`` draws from
    ``SeedSequence(seed, spawn_key=(0, i))``). ``backend`` pins the kernels ("numpy"/"cython");
    None uses the current default.
    """

    def __init__(self, layers: Optional[Iterable[Layer]] = None, name: str = "sequential",
                 dtype: str = "float32", seed: Optional[int] = None,
                 backend: Optional[str] = None):
        if not _is_model_dtype(dtype):
            raise ValueError(f"dtype must be one of {DTYPES}; received dtype={dtype!r}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"model name must be a non-empty string; received name={name!r}")
        self.name = name
        self.dtype = np.dtype(dtype)
        self.seed = seed
        self._entropy = np.random.SeedSequence(seed).entropy
        self._shuffle_rng = np.random.default_rng(
            np.random.SeedSequence(self._entropy, spawn_key=(1,)))
        if backend is not None:
            resolve(backend)  # validates the name
        self._backend = backend
        self.layers: list[Layer] = []
        self._layers_by_name: dict[str, Layer] = {}
        self._next_suffix: dict[str, int] = {}  # per auto-name base: the first "_k" not yet taken
        self.input_shape: Optional[tuple[int, ...]] = None
        self.built = False
        self.optimizer: Optional[optimizers_mod.Optimizer] = None
        self.loss: Optional[losses_mod.Loss] = None
        self.metrics: list[metrics_mod.Metric] = []
        self.stop_training = False
        self.history: Optional[History] = None
        for layer in layers or ():
            self.add(layer)

    # --- structure ------------------------------------------------------------------------------

    @property
    def backend(self) -> Optional[str]:
        return self._backend

    @backend.setter
    def backend(self, name: Optional[str]) -> None:
        if name is not None:
            resolve(name)
        self._backend = name
        for layer in self.layers:
            layer.backend = name

    @property
    def output_shape(self) -> Optional[tuple[int, ...]]:
        return self.layers[-1].output_shape if self.built else None

    def add(self, layer: Layer) -> None:
        """Append ``layer``; it is built at once when the model's input shape is known."""
        self._append(layer)
        try:
            if self.built:
                self._build_layer(len(self.layers) - 1, self.layers[-2].output_shape)
            elif len(self.layers) == 1 and layer.declared_input_shape is not None:
                self.build(layer.declared_input_shape)
        except BaseException:
            del self._layers_by_name[self.layers.pop().name]
            raise

    def _append(self, layer: Layer) -> None:
        """Append ``layer`` unbuilt, renaming it ``<name>_<k>`` when its automatic name is taken
        (in constant time: ``layers`` must only grow through :meth:`add`)."""
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add expects a Layer; received {layer!r}")
        taken_by = self._layers_by_name.get(layer.name)
        if taken_by is layer:
            raise ValueError(f"layer '{layer.name}' is already in model '{self.name}'")
        if taken_by is not None:
            if not layer.auto_named:
                raise ValueError(f"model '{self.name}' already has a layer named '{layer.name}'")
            layer.name = self._free_name(layer.name)
        self.layers.append(layer)
        self._layers_by_name[layer.name] = layer

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickling or ``copy.deepcopy``: the copy's optimizer (unattached, see
        ``Optimizer.__getstate__``) serves the copy; a shallow copy shares the original's."""
        self.__dict__.update(state)
        if self.optimizer is not None and not self.optimizer.attached:
            self.optimizer.attach(self)

    def _free_name(self, base: str) -> str:
        """The first of ``base_1``, ``base_2`` ... that no layer of the model has."""
        k = self._next_suffix.get(base, 1)
        while f"{base}_{k}" in self._layers_by_name:
            k += 1
        self._next_suffix[base] = k + 1
        return f"{base}_{k}"

    def _build_layer(self, index: int, input_shape: tuple[int, ...]) -> None:
        layer = self.layers[index]
        self._check_declared_shape(layer, input_shape)
        if layer.built and (layer.params or layer.state) and layer.dtype != self.dtype:
            raise ValueError(f"layer '{layer.name}' was built with {layer.dtype} weights and "
                             f"cannot join the {self.dtype} model '{self.name}'")
        layer.dtype = self.dtype
        layer.backend = self._backend
        layer.seed_sequence = np.random.SeedSequence(self._entropy, spawn_key=(0, index))
        layer.build(input_shape)

    @staticmethod
    def _check_declared_shape(layer: Layer, input_shape: tuple[int, ...]) -> None:
        declared = layer.declared_input_shape
        if declared is not None and declared != tuple(input_shape):
            raise ValueError(f"layer '{layer.name}' declares input_shape {declared} but receives "
                             f"{tuple(input_shape)} from the layer before it")

    def build(self, input_shape: Sequence[int]) -> None:
        """Build every layer for inputs of ``input_shape`` (no batch axis)."""
        if not self.layers:
            raise ValueError(f"model '{self.name}' has no layers")
        shape = Layer._as_shape(input_shape)
        if self.built:
            if shape != self.input_shape:
                raise ValueError(f"model '{self.name}' was built for input shape "
                                 f"{self.input_shape}, not {shape}")
            return
        newly_built = []
        try:
            for i, layer in enumerate(self.layers):
                if not layer.built:
                    newly_built.append(layer)
                self._build_layer(i, shape)
                shape = layer.output_shape
        except BaseException:  # all or nothing: a later call may build for another shape
            for layer in newly_built:
                layer.unbuild()
            raise
        self.input_shape = Layer._as_shape(input_shape)
        self.built = True

    def weight_specs(self, input_shape: Sequence[int]) -> list[WeightSpecs]:
        """Each layer's :meth:`~Layer.weight_specs` for model inputs of ``input_shape``: what
        :meth:`build` would allocate (in the model dtype), computed without building or
        allocating anything. Raises the ValueError that :meth:`build` would."""
        if self.built:
            raise ValueError(f"model '{self.name}' is already built; see get_weights()")
        shape = Layer._as_shape(input_shape)
        specs = []
        for layer in self.layers:
            self._check_declared_shape(layer, shape)
            output_shape = layer.compute_output_shape(shape)
            specs.append(layer.weight_specs(shape))
            shape = tuple(output_shape)
        return specs

    def _require_built(self, what: str) -> None:
        if not self.built:
            raise ValueError(f"model '{self.name}' is not built; give the first layer an "
                             f"input_shape or call build()/fit() before {what}")

    # --- weights --------------------------------------------------------------------------------

    def get_weights(self) -> list[np.ndarray]:
        """Every layer's :meth:`~Layer.get_weights`, concatenated in layer order."""
        self._require_built("get_weights()")
        return [w for layer in self.layers for w in layer.get_weights()]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        self._require_built("set_weights()")
        counts = [len(layer.params) + len(layer.state) for layer in self.layers]
        if len(weights) != sum(counts):
            raise ValueError(f"model '{self.name}' has {sum(counts)} weight arrays, "
                             f"received {len(weights)}")
        start = 0
        for layer, count in zip(self.layers, counts):
            layer.set_weights(weights[start:start + count])
            start += count

    def count_params(self) -> tuple[int, int]:
        """``(trainable, non_trainable)`` totals."""
        counts = [layer.count_params() for layer in self.layers]
        return sum(c[0] for c in counts), sum(c[1] for c in counts)

    def summary(self, print_fn=print) -> None:
        """Print a table of layers, output shapes and parameter counts."""
        self._require_built("summary()")
        rows = [(f"{layer.name} ({type(layer).__name__})",
                 str((None, *layer.output_shape)), f"{sum(layer.count_params()):,}")
                for layer in self.layers]
        head = ("Layer (type)", "Output Shape", "Param #")
        w = [max(len(r[i]) for r in [head, *rows]) + 3 for i in range(3)]
        width = sum(w)

        def line(r: tuple[str, str, str]) -> str:
            return f"{r[0]:<{w[0]}}{r[1]:<{w[1]}}{r[2]:>{w[2]}}"

        trainable, frozen = self.count_params()
        print_fn(f'Model: "{self.name}"  (dtype {self.dtype})')
        print_fn("_" * width)
        print_fn(line(head))
        print_fn("=" * width)
        for row in rows:
            print_fn(line(row))
        print_fn("=" * width)
        print_fn(f"Total params: {trainable + frozen:,}")
        print_fn(f"Trainable params: {trainable:,}")
        print_fn(f"Non-trainable params: {frozen:,}")

    # --- config ---------------------------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": str(self.dtype),
            "layers": [{"class_name": type(layer).__name__, "config": layer.get_config()}
                       for layer in self.layers],
            "input_shape": None if self.input_shape is None else list(self.input_shape),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], build: bool = True) -> "Sequential":
        """The model :meth:`get_config` describes, built when its input shape is known; with
        ``build=False`` unbuilt, even when a layer declares the input shape (so that its
        :meth:`weight_specs` can be checked before anything is allocated)."""
        model = cls(name=config.get("name", "sequential"), dtype=config.get("dtype", "float32"))
        append = model.add if build else model._append
        for spec in config["layers"]:
            append(get_layer_class(spec["class_name"]).from_config(spec["config"]))
        if build and config.get("input_shape") is not None:
            model.build(config["input_shape"])
        return model

    def compile(self, optimizer: Any = "sgd", loss: Any = "mse",
                metrics: Optional[Sequence[Any]] = None) -> None:
        """Choose the optimizer, loss and metrics, by name or as objects (an optimizer object
        serves one model: see :meth:`cnnext.optimizers.Optimizer.attach`)."""
        optimizer = optimizers_mod.get(optimizer)
        optimizer.attach(self)
        self.optimizer = optimizer
        self.loss = losses_mod.get(loss)
        if isinstance(metrics, (str, metrics_mod.Metric)):
            metrics = [metrics]
        chosen = [metrics_mod.get(m) for m in metrics or () if m != "loss"]
        if isinstance(self.loss, losses_mod.BinaryCrossentropy) and self.loss.from_logits:
            chosen = [_logits_accuracy(m) if isinstance(m, metrics_mod.Accuracy) else m
                      for m in chosen]
        self.metrics = chosen

    def compile_config(self) -> dict[str, Any]:
        self._require_compiled("compile_config()")
        return {"optimizer": optimizers_mod.serialize(self.optimizer),
                "loss": losses_mod.serialize(self.loss),
                "metrics": [m.name for m in self.metrics]}

    def compile_from_config(self, config: dict[str, Any]) -> None:
        self.compile(config["optimizer"], config["loss"], config.get("metrics"))

    def save(self, path: Any) -> None:
        """Write the model to ``path`` with :func:`cnnext.io.save_model`."""
        from .io import save_model

        save_model(self, path)

    def _require_compiled(self, what: str) -> None:
        if self.optimizer is None or self.loss is None:
            raise RuntimeError(f"model '{self.name}' is not compiled; call "
                               f"compile(optimizer, loss, metrics) before {what}")

    # --- data at the boundary -------------------------------------------------------------------

    def _prepare_x(self, x: Any) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype.kind not in "biuf":
            raise TypeError(f"inputs must be numeric arrays; received dtype {x.dtype}")
        if x.ndim < 2 or len(x) == 0:
            raise ValueError(f"inputs need a batch axis and at least one sample; received "
                             f"shape {x.shape}")
        if x.dtype == np.uint8:
            x = x.astype(self.dtype)
            x *= 1.0 / 255.0
        else:
            x = np.ascontiguousarray(x, dtype=self.dtype)
        if not self.built:
            self.build(x.shape[1:])
        elif x.shape[1:] != self.input_shape:
            hint = ""
            if (*x.shape[1:], 1) == self.input_shape:
                hint = "; add the channel axis, e.g. x[..., None]"
            raise ValueError(f"model '{self.name}' expects inputs of shape "
                             f"(N, {', '.join(map(str, self.input_shape))}), received "
                             f"{x.shape}{hint}")
        if not np.isfinite(x).all():
            bad = np.argwhere(~np.isfinite(x).reshape(len(x), -1).all(axis=1))[0, 0]
            raise ValueError(f"inputs contain NaN or infinite values (first in sample {bad})")
        return x

    def _prepare_xy(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        x = self._prepare_x(x)
        y = np.asarray(y)
        if y.ndim == 0 or len(y) != len(x):
            raise ValueError(f"x has {len(x)} samples but y has "
                             f"{len(y) if y.ndim else 'no batch axis'} (shape {y.shape})")
        return x, self.loss.prepare_targets(y, self.output_shape, self.dtype)

    # --- one batch ------------------------------------------------------------------------------

    def _loss_mode(self) -> str:
        """"fused" (loss takes the last layer's pre-activation), "logits" or "plain"."""
        last = self.layers[-1]
        activation = last.activation.name if isinstance(last, ActivatedLayer) else None
        if self.loss.fused_activation is None:
            return "plain"
        if self.loss.from_logits:
            if activation == self.loss.fused_activation:
                raise ValueError(f"loss {self.loss.name} has from_logits=True but the last layer "
                                 f"'{last.name}' already applies {activation}")
            return "logits"
        return "fused" if activation == self.loss.fused_activation else "plain"

    def _blas_policy(self) -> AbstractContextManager:
        """numpy's BLAS (the GEMM path of large convolutions without AVX-512) on one thread while
        the compiled kernels' OpenMP threads own the cores (see
        :func:`cnnext._config.single_threaded_blas`); the convolutions then prefer their direct
        kernels on all threads."""
        if resolve(self._backend) is BACKENDS.get("cython") and get_num_threads() > 1:
            return single_threaded_blas()
        return nullcontext()

    def _relu_pool_pairs(self) -> frozenset[int]:
        """Indices ``i`` where layer ``i`` applies ReLU and layer ``i + 1`` max- or min-pools.

        ReLU is monotone, so it commutes with those poolings: the model runs layer ``i`` without
        its activation and the pooling with the ReLU fused in (``Pool2D.forward(..., relu=True)``,
        one pass over a quarter of the values for 2x2 windows). The outputs are identical, and so
        are the gradients whenever they are finite; it saves two passes over the largest arrays
        of the network and two over the pooled ones.
        """
        layers = self.layers
        return frozenset(
            i for i in range(len(layers) - 1)
            if isinstance(layers[i], ActivatedLayer)
            and type(layers[i].activation) is activations.ReLU
            and isinstance(layers[i + 1], Pool2D) and layers[i + 1].mode in ("max", "min")
        )

    def _forward(self, x: np.ndarray, training: bool, last_activation: bool = True) -> np.ndarray:
        """The model output (``last_activation=False``: the last layer's pre-activation). In
        inference, convolutions apply their ReLU (when not fused into a pooling) themselves."""
        pairs = self._relu_pool_pairs()
        last = len(self.layers) - 1
        with self._blas_policy():
            for i, layer in enumerate(self.layers):
                if i in pairs or (i == last and not last_activation):
                    x = layer.forward_preactivation(x, training)
                elif i - 1 in pairs:  # the pooling that takes over layer i - 1's ReLU
                    x = layer.forward(x, training, relu=True)
                elif (not training and isinstance(layer, Conv2D)
                      and type(layer.activation) is activations.ReLU):
                    x = layer.forward_fused_relu(x)
                else:
                    x = layer.forward(x, training)
        return x

    def _batch_loss(self, t: np.ndarray, out: np.ndarray, mode: str,
                    need_grad: bool) -> tuple[float, Optional[np.ndarray]]:
        if mode == "fused":
            return self.loss.logits_value_and_grad(t, self.layers[-1].preactivation,
                                                   self._backend)
        if mode == "logits":
            return self.loss.logits_value_and_grad(t, out, self._backend)
        return self.loss.value(t, out), (self.loss.gradient(t, out) if need_grad else None)

    def _backward(self, grad: np.ndarray, mode: str) -> None:
        layers = self.layers
        first = next((i for i, layer in enumerate(layers) if layer.trainable and layer.params),
                     len(layers))
        i = len(layers) - 1
        for j, layer in enumerate(layers):
            layer.input_grad_needed = j > first
        pairs = self._relu_pool_pairs()
        with self._blas_policy():
            if mode == "fused":
                grad = layers[i].backward_preactivation(grad)
                i -= 1
            for j in range(i, first - 1, -1):
                if j in pairs:
                    grad = layers[j].backward_preactivation(grad)
                else:
                    grad = layers[j].backward(grad)

    @contextmanager
    def _workspaces(self) -> Iterator[None]:
        """Within (in this thread): every layer writes its large results into its reused
        workspace arrays."""
        previous = [layer.use_workspace for layer in self.layers]
        for layer in self.layers:
            layer.use_workspace = True
        try:
            yield
        finally:
            for layer, used in zip(self.layers, previous):
                layer.use_workspace = used

    def _train_step(self, x: np.ndarray, t: np.ndarray, mode: str) -> tuple[float, np.ndarray]:
        """One optimizer step; ``out`` (the model output) stays valid until the next step."""
        with self._workspaces():
            if mode == "fused":  # the loss applies the output activation along the way
                z = self._forward(x, True, last_activation=False)
                loss, grad, out = self.loss.logits_value_grad_and_output(t, z, self._backend)
            else:
                out = self._forward(x, True)
                loss, grad = self._batch_loss(t, out, mode, need_grad=True)
            self._backward(grad, mode)
        triples = [(f"{layer.name}.{key}", param, layer.grads[key])
                   for layer in self.layers if layer.trainable
                   for key, param in layer.params.items()]
        with DeferInterrupt():
            self.optimizer.apply(triples, self._backend)
        return loss, out

    def _logs(self, t: np.ndarray, out: np.ndarray, loss: float) -> dict[str, float]:
        logs = {"loss": loss}
        for metric in self.metrics:
            logs[metric.name] = metric(t, out)
        return logs

    def train_on_batch(self, x: Any, y: Any, return_dict: bool = False) -> Any:
        """One optimizer step on ``(x, y)``; returns the loss (and metrics, like evaluate)."""
        self._require_compiled("train_on_batch()")
        x, t = self._prepare_xy(x, y)
        loss, out = self._train_step(x, t, self._loss_mode())
        return self._results(self._logs(t, out, loss), return_dict)

    def _results(self, logs: dict[str, float], return_dict: bool) -> Any:
        if return_dict:
            return logs
        return logs["loss"] if len(logs) == 1 else list(logs.values())

    # --- whole arrays ---------------------------------------------------------------------------

    @staticmethod
    def _check_batch_size(batch_size: Any) -> int:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int; received {batch_size!r}")
        return int(batch_size)

    def _evaluate_arrays(self, x: np.ndarray, t: np.ndarray, batch_size: int) -> dict[str, float]:
        mode = self._loss_mode()
        totals: dict[str, float] = {}
        with self._workspaces():
            for start in range(0, len(x), batch_size):
                xb, tb = x[start:start + batch_size], t[start:start + batch_size]
                out = self._forward(xb, False)
                logs = self._logs(tb, out, self._batch_loss(tb, out, mode, need_grad=False)[0])
                for key, value in logs.items():
                    totals[key] = totals.get(key, 0.0) + value * len(xb)
        return {key: value / len(x) for key, value in totals.items()}

    def evaluate(self, x: Any, y: Any, batch_size: int = 32, return_dict: bool = False) -> Any:
        """Loss and metrics over ``(x, y)`` in inference mode: a float when there are no metrics,
        else ``[loss, *metrics]``, or a dict with ``return_dict=True``."""
        self._require_compiled("evaluate()")
        x, t = self._prepare_xy(x, y)
        return self._results(self._evaluate_arrays(x, t, self._check_batch_size(batch_size)),
                             return_dict)

    def predict(self, x: Any, batch_size: int = 32) -> np.ndarray:
        """Model outputs ``(N, *output_shape)`` in inference mode, in the model dtype."""
        x = self._prepare_x(x)
        batch_size = self._check_batch_size(batch_size)
        out = np.empty((len(x), *self.output_shape), dtype=self.dtype)
        with self._workspaces():
            for start in range(0, len(x), batch_size):
                out[start:start + batch_size] = self._forward(x[start:start + batch_size], False)
        return out

    def __call__(self, x: Any) -> np.ndarray:
        return self.predict(x, batch_size=max(len(x), 1))

    def fit(self, x: Any, y: Any, epochs: int = 1, batch_size: int = 32,
            validation_split: float = 0.0, validation_data: Optional[tuple] = None,
            shuffle: bool = True, verbose: int = 1, callbacks: Optional[Sequence[Callback]] = None,
            seed: Optional[int] = None) -> History:
        """Train for ``epochs`` passes over ``(x, y)`` in mini-batches of ``batch_size``.

        ``x`` is ``(N, *input_shape)``: uint8 images are scaled by 1/255, other numbers are used
        as given. ``y`` holds integer class ids or one-hot rows (or regression targets for mse).

        ``validation_split`` holds out the last fraction of the samples (before shuffling);
        ``validation_data=(x_val, y_val)`` takes precedence. ``shuffle`` reorders the training
        samples each epoch, from ``seed`` when given, else from the model's seed. ``verbose``: 0
        silent, 1 a live progress bar, 2 one line per epoch (on stderr). Returns the
        :class:`~cnnext.callbacks.History` (also kept as ``model.history``).
        """
        self._require_compiled("fit()")
        batch_size = self._check_batch_size(batch_size)
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"epochs must be an int >= 0; received {epochs!r}")
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2; received {verbose!r}")
        x, t = self._prepare_xy(x, y)
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (x_val, y_val)")
            val = self._prepare_xy(*validation_data)
        elif validation_split:
            x, t, val = split_validation(x, t, validation_split)
        rng = self._shuffle_rng if seed is None else np.random.default_rng(seed)
        return run_epochs(self, x, t, int(epochs), batch_size, val, rng if shuffle else None,
                          verbose, callbacks or ())
