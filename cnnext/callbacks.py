"""Training callbacks: hooks the model calls during :meth:`~cnnext.models.Sequential.fit`.

Hooks receive ``logs`` dicts: per batch the batch's ``loss`` and metrics, per epoch the epoch means
plus ``val_*`` entries when there is validation data. Setting ``model.stop_training = True`` ends
training after the current batch.
"""
from __future__ import annotations

import math
import sys
from typing import Any, Callable, Iterable, Optional


class Callback:
    """Base class: override any of the ``on_*`` hooks; ``self.model`` is the model being trained
    and ``self.params`` holds ``epochs``, ``steps``, ``batch_size``, ``samples`` and ``verbose``."""

    def __init__(self) -> None:
        self.model: Any = None
        self.params: dict[str, Any] = {}

    def set_model(self, model: Any) -> None:
        self.model = model

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params

    def on_train_begin(self, logs: Optional[dict] = None) -> None: ...

    def on_train_end(self, logs: Optional[dict] = None) -> None: ...

    def on_epoch_begin(self, epoch: int, logs: Optional[dict] = None) -> None: ...

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None: ...

    def on_batch_begin(self, batch: int, logs: Optional[dict] = None) -> None: ...

    def on_batch_end(self, batch: int, logs: Optional[dict] = None) -> None: ...


class CallbackList:
    """Calls one hook on every callback in order."""

    def __init__(self, callbacks: Iterable[Callback], model: Any, params: dict[str, Any]):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be Callback instances; received {cb!r}")
            cb.set_model(model)
            cb.set_params(params)

    def call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(*args)


class History(Callback):
    """Records epoch logs: ``history["loss"][i]`` is the mean training loss of epoch
    ``epoch[i]``."""

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)


class _MonitorMixin:
    """Tracks the best value of ``monitor``; ``mode`` "auto" maximises accuracies."""

    def _init_monitor(self, monitor: str, mode: str, min_delta: float = 0.0) -> None:
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be the name of a logged quantity (a str), such as "
                            f"'val_loss'; received monitor={monitor!r}")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max'; received mode={mode!r}")
        if mode == "auto":
            mode = "max" if monitor.endswith(("accuracy", "acc")) else "min"
        self.monitor, self.mode, self.min_delta = monitor, mode, abs(float(min_delta))
        self.best = math.inf if mode == "min" else -math.inf

    def _current(self, logs: Optional[dict]) -> float:
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(
                f"{type(self).__name__} monitors {self.monitor!r}, which is not in the epoch logs "
                f"{sorted(logs)}; pass validation data for 'val_*' quantities"
            )
        return float(logs[self.monitor])

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


class EarlyStopping(_MonitorMixin, Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    With ``restore_best_weights`` the weights of the best epoch are restored when training ends
    (stopped early or not). ``stopped_epoch`` is the 0-based epoch that triggered the stop.
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0,
                 mode: str = "auto", restore_best_weights: bool = False):
        super().__init__()
        self._init_monitor(monitor, mode, min_delta)
        self.patience = int(patience)
        self.restore_best_weights = bool(restore_best_weights)

    def on_train_begin(self, logs: Optional[dict] = None) -> None:
        self._init_monitor(self.monitor, self.mode, self.min_delta)
        self.wait = 0
        self.stopped_epoch: Optional[int] = None
        self.best_epoch: Optional[int] = None
        self.best_weights: Optional[list] = None

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        value = self._current(logs)
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: Optional[dict] = None) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(_MonitorMixin, Callback):
    """Save the model with ``model.save`` after each epoch, or only when ``monitor`` improves
    (``save_best_only``; the best value is kept across ``fit`` calls, as in Keras, so a later
    fit does not overwrite a better file). ``filepath`` may hold ``{epoch}`` (1-based) and log
    keys, e.g. ``"ckpt-{epoch:02d}-{val_loss:.3f}.npz"``."""

    def __init__(self, filepath: str, monitor: str = "val_loss", save_best_only: bool = False,
                 mode: str = "auto"):
        super().__init__()
        self.filepath = str(filepath)
        self.save_best_only = bool(save_best_only)
        self._init_monitor(monitor, mode)

    def on_epoch_end(self, epoch: int, logs: Optional[dict] = None) -> None:
        logs = logs or {}
        if self.save_best_only:
            value = self._current(logs)
            if not self._improved(value):
                return
            self.best = value
        self.model.save(self.filepath.format(epoch=epoch + 1, **logs))


class LearningRateScheduler(Callback):
    """At each epoch start set the optimizer's learning rate to ``schedule(epoch, lr)`` (``epoch``
    0-based, ``lr`` the current rate)."""

    def __init__(self, schedule: Callable[[int, float], float]):
        super().__init__()
        if not callable(schedule):
            raise TypeError(f"schedule must be callable; received {schedule!r}")
        self.schedule = schedule

    def on_epoch_begin(self, epoch: int, logs: Optional[dict] = None) -> None:
        optimizer = self.model.optimizer
        optimizer.learning_rate = float(self.schedule(epoch, optimizer.current_learning_rate()))


class TerminateOnNaN(Callback):
    """Stop training, with a message on stderr, as soon as a batch loss is NaN or infinite."""

    def __init__(self) -> None:
        super().__init__()
        self.epoch = 0
        self.terminated_at: Optional[tuple[int, int]] = None

    def on_epoch_begin(self, epoch: int, logs: Optional[dict] = None) -> None:
        self.epoch = epoch

    def on_batch_end(self, batch: int, logs: Optional[dict] = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            self.terminated_at = (self.epoch, batch)
            self.model.stop_training = True
            print(f"TerminateOnNaN: batch {batch} of epoch {self.epoch + 1} gave loss {loss}; "
                  "training stopped", file=sys.stderr)
